"""moe_dispatch operator: AscendC kernel, CPU twin, numpy reference."""
