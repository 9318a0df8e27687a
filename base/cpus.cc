// The affinity mask through a dynamically sized cpu set, so that machines with more than
// CPU_SETSIZE (1024) CPUs count right.
#include "base/cpus.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>

namespace reid::base {

int OnlineCpuCount() {
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<int>(online) : 1;
}

int AffinityCpuCount() {
  const long configured = sysconf(_SC_NPROCESSORS_CONF);
  const int max_cpus = std::max<long>(1024, configured > 0 ? configured : 0);
  cpu_set_t* set = CPU_ALLOC(max_cpus);
  if (set == nullptr) return OnlineCpuCount();
  const size_t size = CPU_ALLOC_SIZE(max_cpus);
  CPU_ZERO_S(size, set);
  int count = 0;
  if (sched_getaffinity(0, size, set) == 0) count = CPU_COUNT_S(size, set);
  CPU_FREE(set);
  return count > 0 ? count : OnlineCpuCount();
}

}  // namespace reid::base
