// How many CPUs this process may use (its affinity mask, which srun --cpus-per-task, mpirun
// --bind-to, taskset and cgroup cpusets narrow) and how many the machine has online.
#pragma once

namespace reid::base {

// CPUs in this process's affinity mask (sched_getaffinity); the online count when it cannot be
// read. At least 1.
int AffinityCpuCount();

// CPUs online on this machine (sysconf); at least 1.
int OnlineCpuCount();

}  // namespace reid::base
