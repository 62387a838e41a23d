"""moe_combine operator: AscendC kernel, CPU twin, numpy reference."""
