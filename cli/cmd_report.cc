// `reid report --run_dir=DIR`: writes DIR/report.html from the run's history.jsonl, metrics.json,
// config.textproto and retrieval grid (monitoring/report/report.h); bad history lines are warnings.
#include <gflags/gflags.h>

#include <iostream>

#include "cli/commands.h"
#include "monitoring/report/report.h"

DEFINE_string(run_dir, "", "Run directory (a training's --output_dir) with history.jsonl");

namespace reid::trainer {

int RunReport(int, char**, const std::vector<std::string>&) {
  report::ReportInfo info;
  const Status s = report::WriteRunReport(FLAGS_run_dir, &info);
  if (!s.ok()) return Fail("report", s);
  for (const std::string& w : info.warnings) std::cerr << "warning: " << w << "\n";
  std::cout << "report: " << info.path << " (" << info.step_records << " training records, "
            << info.eval_records << " evaluations, " << info.bad_lines << " lines skipped)\n";
  return kExitOk;
}

}  // namespace reid::trainer
