// Argument access for the MindSpore aot signature
//   int Fn(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream, void* extra)
// used both by ops.Custom(func_type="aot") and by the numpy path (ctypes).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include "launcher.h"

namespace ascendc_twin {

inline int ElemSize(const std::string& dt) {
    if (dt == "float32" || dt == "int32" || dt == "uint32") return 4;
    if (dt == "float16" || dt == "bfloat16" || dt == "int16" || dt == "uint16") return 2;
    if (dt == "uint8" || dt == "int8" || dt == "bool") return 1;
    if (dt == "int64" || dt == "float64" || dt == "uint64") return 8;
    return 0;
}

struct AotArgs {
    std::string op;
    int n;
    void** params;
    int* ndims;
    int64_t** shapes;
    const char** dtypes;

    int NDim(int i) const { return ndims[i]; }
    int64_t Dim(int i, int d) const { return shapes[i][d]; }
    std::string DType(int i) const { return dtypes[i]; }
    int64_t Numel(int i) const {
        int64_t k = 1;
        for (int d = 0; d < ndims[i]; ++d) k *= shapes[i][d];
        return k;
    }
    template <class T>
    T* Ptr(int i) const { return static_cast<T*>(params[i]); }
    GmRegion Region(int i, const char* name) const {
        return GmRegion{static_cast<const uint8_t*>(params[i]), uint64_t(Numel(i)) * ElemSize(DType(i)), name};
    }
    std::string ShapeStr(int i) const {
        std::string s = "[";
        for (int d = 0; d < ndims[i]; ++d) s += (d ? ", " : "") + std::to_string(shapes[i][d]);
        return s + "]";
    }
    void Count(int expected) const {
        if (n != expected) BadArg(op + ": expected " + std::to_string(expected) + " inputs+outputs, got " + std::to_string(n));
    }
    // dtype one of `dts`; rank `rank` (or any when -1)
    void Expect(int i, const char* name, std::initializer_list<const char*> dts, int rank) const {
        bool ok = false;
        std::string all;
        for (const char* d : dts) { ok = ok || DType(i) == d; all += (all.empty() ? "" : "/") + std::string(d); }
        if (!ok) BadArg(op + ": " + name + " must be " + all + ", got " + DType(i));
        if (rank >= 0 && NDim(i) != rank) BadArg(op + ": " + name + " must have rank " + std::to_string(rank) + ", got shape " + ShapeStr(i));
    }
    void ExpectShape(int i, const char* name, std::initializer_list<int64_t> dims) const {
        bool ok = NDim(i) == static_cast<int>(dims.size());
        int d = 0;
        std::string want = "[";
        for (int64_t v : dims) { if (ok && Dim(i, d) != v) ok = false; want += (d ? ", " : "") + std::to_string(v); ++d; }
        if (!ok) BadArg(op + ": " + name + " must have shape " + want + "], got " + ShapeStr(i));
    }
};

}  // namespace ascendc_twin
