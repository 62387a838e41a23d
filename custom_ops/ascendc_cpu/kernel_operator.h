// CPU twin of the AscendC kernel API subset used by custom_ops kernels (see README.md).
// A kernel source includes "kernel_operator.h" as on the NPU; built with g++ it resolves here.
#pragma once
#include "twin/dtypes.h"
#include "twin/runtime.h"
#include "twin/tensor.h"
#include "twin/pipe.h"
#include "twin/datacopy.h"
#include "twin/vector.h"
#include "twin/sync.h"
#include "twin/tiling.h"

#define KERNEL_TASK_TYPE_DEFAULT(x)
#define ASCENDC_CPU_TWIN 1
