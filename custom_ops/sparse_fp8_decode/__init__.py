"""sparse_fp8_decode operator: AscendC kernel, CPU twin, numpy reference, MODEL1 cache packing."""
