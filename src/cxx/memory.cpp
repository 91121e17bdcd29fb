// Memory figures: the CUDA caching allocator's statistics (through the
// accelerator API, no CUDA headers needed) and a counting CPU allocator that
// recommend_batch installs while it measures host memory. Rust twin:
// src/torch/memory.rs.
#include <ATen/DeviceAccelerator.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <atomic>
#include <mutex>
#include <unordered_map>

#include "common.h"

using perfopt_shim::guarded;

namespace {

std::atomic<uint64_t> counted_current{0};
std::atomic<uint64_t> counted_peak{0};

// Blocks come from alloc_cpu and go back through free_cpu, exactly as with
// libtorch's default CPU allocator, so that either allocator's deleter frees
// the other's blocks: code that allocates while this one is installed and
// frees through GetCPUAllocator() after it is gone (or the other way round)
// stays correct. Sizes are kept in a table for the count.
std::mutex sizes_mutex;
std::unordered_map<void *, size_t> *sizes = new std::unordered_map<void *, size_t>();  // never destroyed

void counting_delete(void *data) {
  if (data == nullptr) return;
  size_t size = 0;
  {
    std::lock_guard<std::mutex> lock(sizes_mutex);
    auto found = sizes->find(data);
    if (found != sizes->end()) {
      size = found->second;
      sizes->erase(found);
    }
  }
  counted_current.fetch_sub(size, std::memory_order_relaxed);
  c10::free_cpu(data);
}

// A CPU allocator (alloc_cpu and free_cpu, as libtorch's default) that counts
// the bytes in use and their peak.
struct CountingAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    void *data = n == 0 ? nullptr : c10::alloc_cpu(n);
    if (data != nullptr) {
      {
        std::lock_guard<std::mutex> lock(sizes_mutex);
        (*sizes)[data] = n;
      }
      uint64_t now = counted_current.fetch_add(n, std::memory_order_relaxed) + n;
      uint64_t peak = counted_peak.load(std::memory_order_relaxed);
      while (now > peak && !counted_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
      }
    }
    return c10::DataPtr(data, data, &counting_delete, c10::Device(c10::DeviceType::CPU));
  }
  c10::DeleterFnPtr raw_deleter() const override { return &counting_delete; }
  void copy_data(void *dest, const void *src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

CountingAllocator counting;
std::mutex install_mutex;
c10::Allocator *previous = nullptr;

}  // namespace

extern "C" {

int pshim_device_memory_stats(int32_t device_index, uint64_t *allocated, uint64_t *peak_allocated,
                              uint64_t *reserved) {
  return guarded([&] {
    auto stats = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(device_index));
    constexpr size_t aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = static_cast<uint64_t>(stats.allocated_bytes[aggregate].current);
    *peak_allocated = static_cast<uint64_t>(stats.allocated_bytes[aggregate].peak);
    *reserved = static_cast<uint64_t>(stats.reserved_bytes[aggregate].current);
  });
}

int pshim_device_reset_peak(int32_t device_index) {
  return guarded([&] { at::accelerator::resetPeakStats(static_cast<c10::DeviceIndex>(device_index)); });
}

int pshim_device_empty_cache(void) {
  return guarded([&] { at::accelerator::emptyCache(); });
}

int pshim_host_counting_install(int enable) {
  return guarded([&] {
    std::lock_guard<std::mutex> lock(install_mutex);
    if (enable) {
      if (previous != nullptr) return;  // already installed
      previous = c10::GetCPUAllocator();
      c10::SetCPUAllocator(&counting, /*priority=*/0);
      if (c10::GetCPUAllocator() != &counting) {
        previous = nullptr;
        TORCH_CHECK(false, "another CPU allocator with a higher priority is installed: host memory cannot be counted");
      }
    } else if (previous != nullptr) {
      c10::SetCPUAllocator(previous, /*priority=*/0);
      previous = nullptr;
    }
  });
}

void pshim_host_counting_read(uint64_t *current, uint64_t *peak) {
  *current = counted_current.load(std::memory_order_relaxed);
  *peak = counted_peak.load(std::memory_order_relaxed);
}

void pshim_host_counting_reset_peak(void) {
  counted_peak.store(counted_current.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // extern "C"
