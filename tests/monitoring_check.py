#!/usr/bin/python3
"""Static checks of the shipped monitoring files, and the PromQL they contain as one file.

Checks (exit 1 listing every problem):
- monitoring/dashboards/reid-training.json is a current Grafana dashboard: schemaVersion >= 36, a
  Prometheus `datasource` variable that every panel, query and annotation uses, `job`, `run` and
  `rank` query variables (label_values; `run` multi-select), unique panel ids, panels inside the
  24-column grid without overlaps; every live reid_* selector of a query or annotation picks
  run=~"$run" (the reid_run_* outcome panels pick their Pushgateway job instead);
- every reid_* metric name in the dashboard and in monitoring/prometheus/alerts.yml is listed in
  monitoring/metrics.txt (histograms as NAME_bucket/_sum/_count only), and every label a selector
  puts on a reid_* metric is one of that metric's labels (or job, instance, le);
- every aggregation of the rules keeps `run` (so that one run never hides another), except those
  by (job, instance) of a scrape target;
- every alert has a runbook_url "docs/runbook.md#ANCHOR" whose heading exists in docs/runbook.md.

--promql-out FILE writes every PromQL expression (dashboard queries and annotations, the metric
selector of each label_values variable, alert and recording rules) to FILE, one per line, with Grafana's template
variables made concrete ($__rate_interval and $__interval -> 1m, $__range -> 5m, any other
$var / ${var} -> .*). Alert expressions are written with `bool` after each comparison operator, so
that they return a series whether or not the alert fires: a real Prometheus that scraped a real
run must return data for every line. Expressions that need what a CPU test run lacks are written
as comment lines "# skip(REASON): EXPR" (REASON: cuda, dcgm, pushgateway; failed, scheduled:
the outcome of a failed or a scheduled run; hour: an hour of history) unless --with names the
reason (--with=pushgateway,cuda). Lines starting with '#' are comments.

Usage: tests/monitoring_check.py [ROOT] [--promql-out FILE] [--with REASONS]
Exit 77 when Python's yaml module is missing (python3-yaml)."""
import argparse
import json
import os
import re
import sys

DASHBOARD = 'monitoring/dashboards/reid-training.json'
ALERTS = 'monitoring/prometheus/alerts.yml'
METRICS = 'monitoring/metrics.txt'
RUNBOOK = 'docs/runbook.md'
# Labels Prometheus adds, and the histogram bucket label.
EXTRA_LABELS = {'job', 'instance', 'le'}
AGGREGATION = re.compile(r'\b(?:sum|min|max|avg|count|quantile|topk|bottomk|stddev|stdvar|group)'
                         r'\s+by\s*\(([^)]*)\)')
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
NAME = re.compile(r'(?<![A-Za-z0-9_:])[A-Za-z_:][A-Za-z0-9_:]*')
SELECTOR = re.compile(r'(?<![A-Za-z0-9_:])(reid_[A-Za-z0-9_]*)\s*\{([^}]*)\}')
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*,?')
COMPARISON = re.compile(r'==|!=|>=|<=|>|<')


def read_metric_table(path):
    """monitoring/metrics.txt -> {name: (type, set of labels)}."""
    table = {}
    for number, line in enumerate(open(path), 1):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 4 or fields[1] not in ('counter', 'gauge', 'histogram'):
            raise ValueError('%s:%d: want "name type labels source", got %r' % (path, number, line))
        labels = set() if fields[2] == '-' else set(fields[2].split(','))
        table[fields[0]] = (fields[1], labels)
    return table


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get('panels', []))


def dashboard_exprs(dash):
    """[(where, expr)] of every query, Prometheus annotation and label_values variable's series
    selector."""
    out = []
    for p in walk_panels(dash.get('panels', [])):
        for t in p.get('targets', []):
            out.append(('panel %r %s' % (p.get('title'), t.get('refId')), t.get('expr', '')))
    for a in dash.get('annotations', {}).get('list', []):
        if a.get('datasource', {}).get('type') == 'prometheus':
            out.append(('annotation %r' % a.get('name'), a.get('expr', '')))
    for v in dash.get('templating', {}).get('list', []):
        if v.get('type') != 'query':
            continue
        q = v.get('definition', '')
        m = re.fullmatch(r'\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*', q)
        if m:
            out.append(('variable %s' % v['name'], m.group(1)))
    return out


def alert_exprs(rules_doc):
    """[(where, expr, is_alert)] of every rule in a Prometheus rules file."""
    out = []
    for group in rules_doc.get('groups', []):
        for rule in group.get('rules', []):
            name = rule.get('alert') or rule.get('record')
            out.append(('rule %s' % name, str(rule.get('expr', '')), 'alert' in rule))
    return out


def check_dashboard(dash):
    problems = []
    if dash.get('schemaVersion', 0) < 36:
        problems.append('dashboard: schemaVersion %s < 36 (current Grafana)' % dash.get('schemaVersion'))
    variables = {v.get('name'): v for v in dash.get('templating', {}).get('list', [])}
    ds = variables.get('datasource', {})
    if ds.get('type') != 'datasource' or ds.get('query') != 'prometheus':
        problems.append('dashboard: no Prometheus data source variable named "datasource"')
    for name in ('job', 'run', 'rank'):
        v = variables.get(name, {})
        if v.get('type') != 'query' or 'label_values(' not in v.get('definition', ''):
            problems.append('dashboard: no query variable %r with label_values' % name)
    if not (variables.get('run', {}).get('multi') and variables.get('run', {}).get('includeAll')):
        problems.append('dashboard: the run variable must be multi-select with All')
    for a in dash.get('annotations', {}).get('list', []):
        if a.get('datasource', {}).get('type') == 'prometheus' and (
                a['datasource'].get('uid') != '${datasource}' or not a.get('expr')):
            problems.append('dashboard: annotation %r: no expr or not ${datasource}' % a.get('name'))
    for where, expr in dashboard_exprs(dash):
        if where in ('variable job', 'variable run'):  # what picks the runs
            continue
        for m in SELECTOR.finditer(expr):
            if m.group(1).startswith('reid_run_'):
                continue
            if not re.search(r'\brun\s*=~\s*"\$run"', m.group(2)):
                problems.append('dashboard: %s: %s{%s} does not pick run=~"$run"'
                                % (where, m.group(1), m.group(2)))
    ids, boxes = set(), {}
    for p in walk_panels(dash.get('panels', [])):
        title = p.get('title')
        if p.get('id') in ids:
            problems.append('dashboard: panel id %s used twice' % p.get('id'))
        ids.add(p.get('id'))
        g = p.get('gridPos', {})
        if g.get('x', -1) < 0 or g.get('w', 0) <= 0 or g.get('x', 0) + g.get('w', 0) > 24:
            problems.append('dashboard: panel %r outside the 24-column grid: %s' % (title, g))
        if p.get('type') == 'row':
            continue
        if p.get('datasource', {}).get('uid') != '${datasource}':
            problems.append('dashboard: panel %r does not use ${datasource}' % title)
        if not p.get('targets'):
            problems.append('dashboard: panel %r has no query' % title)
        for t in p.get('targets', []):
            if t.get('datasource', {}).get('uid') != '${datasource}' or not t.get('expr'):
                problems.append('dashboard: panel %r query %s: no expr or not ${datasource}'
                                % (title, t.get('refId')))
    problems += check_overlaps(dash.get('panels', []))
    return problems


def check_overlaps(panels):
    """Panels of the same level (top level, or inside one collapsed row) must not overlap."""
    problems = []
    levels = [panels] + [p.get('panels', []) for p in panels if p.get('panels')]
    for level in levels:
        cells = {}
        for p in level:
            g = p['gridPos']
            for x in range(g['x'], g['x'] + g['w']):
                for y in range(g['y'], g['y'] + g['h']):
                    if (x, y) in cells:
                        problems.append('dashboard: panels %r and %r overlap at x=%d y=%d'
                                        % (cells[(x, y)], p.get('title'), x, y))
                        break
                    cells[(x, y)] = p.get('title')
                else:
                    continue
                break
    return problems


def check_names(where, expr, table):
    """Problems with the reid_* names and selector labels of one expression."""
    problems = []
    bare = STRING.sub('""', expr)
    for name in set(NAME.findall(bare)):
        if not name.startswith('reid_'):
            continue
        base, suffix = name, None
        for s in ('_bucket', '_sum', '_count'):
            if name not in table and name.endswith(s) and name[:-len(s)] in table:
                base, suffix = name[:-len(s)], s
        if base not in table:
            problems.append('%s: %s is not in %s' % (where, name, METRICS))
        elif (table[base][0] == 'histogram') != (suffix is not None):
            problems.append('%s: %s: a %s is used as %s' % (
                where, name, table[base][0], 'NAME' + (suffix or '')))
    for m in SELECTOR.finditer(expr):
        base = re.sub(r'_(bucket|sum|count)$', '', m.group(1))
        if base not in table and m.group(1) not in table:
            continue
        allowed = table.get(base, table.get(m.group(1)))[1] | EXTRA_LABELS
        body = m.group(2)
        for matcher in MATCHER.finditer(body):
            if matcher.group(1) not in allowed:
                problems.append('%s: %s has no label %r (labels: %s)' % (
                    where, m.group(1), matcher.group(1), ', '.join(sorted(allowed))))
    return problems


def substitute(expr):
    """Grafana's template variables made concrete, on one line."""
    expr = re.sub(r'\$(__rate_interval|__interval)\b|\$\{(__rate_interval|__interval)\}', '1m', expr)
    expr = re.sub(r'\$__range\b|\$\{__range\}', '5m', expr)
    expr = re.sub(r'\$\{[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}|\$[A-Za-z_][A-Za-z0-9_]*', '.*', expr)
    return ' '.join(expr.split())


def with_bool(expr):
    """Adds `bool` after each comparison operator outside {...} and [...] (and outside strings),
    so that `a > 3` returns 0/1 for every series of a instead of filtering them."""
    out, depth, i = [], 0, 0
    while i < len(expr):
        s = STRING.match(expr, i)
        if s:
            out.append(s.group(0))
            i = s.end()
            continue
        c = expr[i]
        depth += c in '{['
        depth -= c in '}]'
        m = COMPARISON.match(expr, i) if depth == 0 else None
        if m:
            rest = expr[m.end():]
            out.append(m.group(0) + ('' if re.match(r'\s*bool\b', rest) else ' bool'))
            i = m.end()
            continue
        out.append(c)
        i += 1
    return ''.join(out)


def check_rules(rules_doc, runbook_anchors):
    """Aggregations keep run; alerts link an existing runbook section."""
    problems = []
    for group in rules_doc.get('groups', []):
        for rule in group.get('rules', []):
            name = rule.get('alert') or rule.get('record')
            for m in AGGREGATION.finditer(STRING.sub('""', str(rule.get('expr', '')))):
                labels = {l.strip() for l in m.group(1).split(',') if l.strip()}
                if 'run' not in labels and labels != {'job', 'instance'}:
                    problems.append('rule %s: aggregates by (%s) without run'
                                    % (name, ', '.join(sorted(labels))))
            if 'alert' not in rule:
                continue
            url = rule.get('annotations', {}).get('runbook_url', '')
            m = re.fullmatch(re.escape(RUNBOOK) + r'#([a-z0-9-]+)', url)
            if not m:
                problems.append('rule %s: runbook_url %r is not %s#ANCHOR' % (name, url, RUNBOOK))
            elif m.group(1) not in runbook_anchors:
                problems.append('rule %s: %s has no heading for #%s' % (name, RUNBOOK, m.group(1)))
    return problems


def markdown_anchors(path):
    """GitHub's anchors of the headings of a Markdown file."""
    anchors = set()
    for line in open(path):
        m = re.match(r'#+\s+(.*)', line)
        if m:
            text = re.sub(r'[^\w\- ]', '', m.group(1).strip().lower())
            anchors.add(text.replace(' ', '-'))
    return anchors


def skip_reason(expr):
    if 'DCGM_' in expr:
        return 'dcgm'
    if 'reid_gpu_memory_' in expr:
        return 'cuda'
    if 'reid_scheduled' in expr:
        return 'scheduled'  # a run pushed under monitoring.job "reid_scheduled"
    if 'reason="error"' in expr:
        return 'failed'  # the outcome of a failed run
    if re.search(r'\[1h\] offset', expr):
        return 'hour'  # an hour of history
    if 'reid_run_' in expr:
        return 'pushgateway'
    return None


def write_promql(path, exprs, enabled):
    lines = ['# PromQL of %s and %s (tests/monitoring_check.py); one expression per line, '
             'comments start with #' % (DASHBOARD, ALERTS)]
    seen = set()
    for where, expr, is_alert in exprs:
        e = substitute(with_bool(expr) if is_alert else expr)
        if e in seen:
            continue
        seen.add(e)
        reason = skip_reason(e)
        if reason and reason not in enabled:
            lines.append('# skip(%s): %s' % (reason, e))
        else:
            lines.append(e)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return sum(1 for l in lines if not l.startswith('#'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', nargs='?', default=os.path.join(os.path.dirname(__file__), '..'))
    parser.add_argument('--promql-out', help='write the PromQL expressions to this file')
    parser.add_argument('--with', dest='enabled', default='',
                        help='comma-separated skip reasons to include '
                             '(cuda,dcgm,pushgateway,failed,scheduled,hour)')
    args = parser.parse_args()
    try:
        import yaml
    except ImportError:
        print('SKIP: Python has no yaml module (apt-get install python3-yaml)')
        return 77
    root = args.root
    table = read_metric_table(os.path.join(root, METRICS))
    dash = json.load(open(os.path.join(root, DASHBOARD)))
    rules = yaml.safe_load(open(os.path.join(root, ALERTS)))
    exprs = [(w, e, False) for w, e in dashboard_exprs(dash)] + alert_exprs(rules)

    problems = check_dashboard(dash)
    anchors = markdown_anchors(os.path.join(root, RUNBOOK)) if os.path.exists(
        os.path.join(root, RUNBOOK)) else set()
    problems += check_rules(rules, anchors)
    for where, expr, _ in exprs:
        problems += check_names(where, expr, table)
    for p in problems:
        print(p)
    print('%d expressions (%s, %s), %d metric names in %s, %d problem(s)' % (
        len(exprs), DASHBOARD, ALERTS, len(table), METRICS, len(problems)))
    if args.promql_out:
        n = write_promql(args.promql_out, exprs, set(filter(None, args.enabled.split(','))))
        print('wrote %d expressions to %s' % (n, args.promql_out))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
