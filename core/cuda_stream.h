// cudaStream_t without the CUDA headers, so that op headers declaring CUDA entry points can be
// included by CPU-only translation units. Identical to the runtime's own declaration.
#pragma once

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
