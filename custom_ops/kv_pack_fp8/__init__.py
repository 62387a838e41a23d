"""kv_pack_fp8 operator: AscendC kernel, CPU twin, numpy reference."""
