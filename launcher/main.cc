// reid-launch: one trainer per GPU through mpirun (or srun inside a SLURM allocation), with stop
// signals forwarded and whole-job restarts from the newest checkpoint (docs/distributed.md).
#include <iostream>
#include <string>
#include <vector>

#include "launcher/launch_args.h"
#include "launcher/plan.h"
#include "launcher/supervisor.h"

int main(int argc, char** argv) {
  using namespace reid::launcher;
  reid::StatusOr<LaunchArgs> args =
      ParseLaunchArgs(std::vector<std::string>(argv + 1, argv + argc));
  if (!args.ok()) {
    std::cerr << "error: reid-launch: " << args.status().message() << "\n" << kLaunchUsage;
    return 2;
  }
  if (args->help) {
    std::cout << kLaunchUsage;
    return 0;
  }
  reid::StatusOr<LaunchPlan> plan = MakeLaunchPlan(*args);
  if (!plan.ok()) {
    std::cerr << "error: reid-launch: " << plan.status().message() << "\n";
    return plan.status().exit_code();  // 2 for a user error, 1 for a fault of the system
  }
  std::cerr << "reid-launch: " << plan->procs_per_node << " rank(s) per node on " << plan->nodes
            << " node(s) through " << (plan->backend == Backend::kSrun ? "srun" : "mpirun")
            << ", up to " << plan->max_restarts << " restart(s)" << std::endl;
  SuperviseOptions options;
  options.max_restarts = plan->max_restarts;
  options.restart_delay_s = plan->restart_delay_s;
  options.env = plan->env;
  const LaunchPlan& p = *plan;
  return Supervise([&p](int attempt) { return AttemptArgv(p, attempt); }, options, std::cerr);
}
