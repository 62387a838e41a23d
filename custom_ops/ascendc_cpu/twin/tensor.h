// LocalTensor (Unified Buffer) and GlobalTensor (GM) with bounds-checked element access.
#pragma once
#include <cstdint>
#include <string>
#include "dtypes.h"
#include "hazard.h"
#include "runtime.h"

#define __aicore__
#define __global__
#define __gm__
#define __inline__ inline
using GM_ADDR = uint8_t*;

namespace AscendC {

enum class TPosition : uint8_t { GM, VECIN, VECOUT, VECCALC, A1, A2, B1, B2, CO1, CO2, MAX };
using QuePosition = TPosition;

template <class T>
class LocalTensor {
public:
    LocalTensor() = default;
    LocalTensor(T* p, uint32_t n, int32_t owner, int32_t buf) : ptr_(p), size_(n), owner_(owner), buf_(buf) {}

    uint32_t GetSize() const { return size_; }
    T* GetPhyAddr() const { return ptr_; }
    T GetValue(uint32_t i) const {
        Check(i, "GetValue");
        ascendc_twin::UbAccess(ascendc_twin::kS, ptr_ + i, sizeof(T), false, "LocalTensor::GetValue");
        return ptr_[i];
    }
    void SetValue(uint32_t i, T v) const {
        Check(i, "SetValue");
        ascendc_twin::UbAccess(ascendc_twin::kS, ptr_ + i, sizeof(T), true, "LocalTensor::SetValue");
        ptr_[i] = v;
    }
    T& operator()(uint32_t i) const {
        Check(i, "operator()");
        ascendc_twin::UbAccess(ascendc_twin::kS, ptr_ + i, sizeof(T), true, "LocalTensor::operator()");
        return ptr_[i];
    }
    LocalTensor operator[](uint32_t off) const {
        if (off > size_) ascendc_twin::Violate("UB_BOUNDS", "LocalTensor[" + std::to_string(off) + "] past its " + std::to_string(size_) + " elements");
        return LocalTensor(ptr_ + off, size_ - off, owner_, buf_);
    }
    template <class U>
    LocalTensor<U> ReinterpretCast() const {
        return LocalTensor<U>(reinterpret_cast<U*>(ptr_), static_cast<uint32_t>(uint64_t(size_) * sizeof(T) / sizeof(U)), owner_, buf_);
    }
    int32_t Owner() const { return owner_; }
    int32_t Buf() const { return buf_; }
    bool Valid() const { return ptr_ != nullptr; }

private:
    void Check(uint32_t i, const char* op) const {
        if (ptr_ == nullptr) ascendc_twin::Violate("UB_BOUNDS", std::string(op) + " on an unallocated LocalTensor");
        if (i >= size_) ascendc_twin::Violate("UB_BOUNDS", std::string(op) + "(" + std::to_string(i) + ") past the tensor's " + std::to_string(size_) + " elements");
    }
    T* ptr_ = nullptr;
    uint32_t size_ = 0;
    int32_t owner_ = -1;  // queue id (or -1 for TBuf / views)
    int32_t buf_ = -1;    // buffer slot in that queue
};

template <class T>
class GlobalTensor {
public:
    void SetGlobalBuffer(__gm__ T* p, uint64_t n) { ptr_ = p; size_ = n; }
    void SetGlobalBuffer(__gm__ T* p) { ptr_ = p; size_ = UINT64_MAX; }
    T* GetPhyAddr() const { return ptr_; }
    uint64_t GetSize() const { return size_; }
    T GetValue(uint64_t i) const { Check(i, "GetValue"); return ptr_[i]; }
    void SetValue(uint64_t i, T v) const { Check(i, "SetValue"); ptr_[i] = v; }
    GlobalTensor operator[](uint64_t off) const {
        GlobalTensor g;
        g.ptr_ = ptr_ + off;
        g.size_ = size_ == UINT64_MAX ? UINT64_MAX : (off <= size_ ? size_ - off : 0);
        return g;
    }
    // element range [0, n) must lie inside this tensor and inside a registered GM argument
    void CheckRange(uint64_t n, const char* op) const {
        if (size_ != UINT64_MAX && n > size_)
            ascendc_twin::Violate("GM_BOUNDS", std::string(op) + " of " + std::to_string(n) + " elements past a GlobalTensor of " + std::to_string(size_));
        ascendc_twin::CheckGm(ptr_, n * sizeof(T), op);
    }

private:
    void Check(uint64_t i, const char* op) const { CheckRange(i + 1, op); (void)i; }
    T* ptr_ = nullptr;
    uint64_t size_ = 0;
};

}  // namespace AscendC
