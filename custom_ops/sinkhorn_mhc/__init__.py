"""sinkhorn_mhc operator: AscendC kernel, CPU twin, numpy reference."""
