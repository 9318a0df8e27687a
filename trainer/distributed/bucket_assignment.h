// DDP's bucket assignment (torch/csrc/distributed/c10d/reducer.cpp
// compute_bucket_assignment_by_size), kept free of LibTorch so it is cheap to test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace reid::dist {

// Walks tensors in registration order, one open bucket per dtype key, and closes a bucket once
// its size reaches the current limit (first_limit for the first bucket of each key, cap after;
// so a bucket may exceed the limit by one tensor). Returns buckets in launch order: sorted by
// smallest index, then reversed, so the last-registered parameters, whose gradients are ready
// first in backward, go first and the small first bucket goes last.
std::vector<std::vector<size_t>> AssignBuckets(const std::vector<int64_t>& bytes,
                                               const std::vector<int>& dtype_keys,
                                               int64_t first_limit, int64_t cap);

}  // namespace reid::dist
