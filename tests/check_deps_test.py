#!/usr/bin/python3
"""Proves that tests/check_deps.py has no holes: on a copy of the repository's sources and DEPS
files, a deliberate wrong include in every folder that holds sources is reported, as are a
generated header its folder may not include, an include that names no file, a folder that no DEPS
covers (or that the README's layout leaves out), a forbidden LibTorch include and a forbidden link. The unmodified copy has no violation.
Usage: tests/check_deps_test.py ROOT"""
import importlib.util
import os
import shutil
import sys
import tempfile

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else '.')
spec = importlib.util.spec_from_file_location('check_deps', os.path.join(ROOT, 'tests',
                                                                          'check_deps.py'))
check_deps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_deps)

failures = []


def expect(name, ok, detail=''):
    print('%s %s%s' % ('ok  ' if ok else 'FAIL', name, (': ' + detail) if detail and not ok else ''))
    if not ok:
        failures.append(name)


def copy_tree(dst):
    """DEPS, CMakeLists.txt, sources and .proto files of the repository (no build folders)."""
    keep = check_deps.SOURCES + ('.proto',)
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames
                       if d not in check_deps.SKIP and not d.startswith(('build', '.'))]
        rel = os.path.relpath(dirpath, ROOT)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for name in filenames:
            if name in ('DEPS', 'CMakeLists.txt') or name.endswith(keep) or \
                    (rel == '.' and name == 'README.md'):
                os.makedirs(os.path.join(dst, rel), exist_ok=True)
                shutil.copy(os.path.join(dirpath, name), os.path.join(dst, rel, name))


def with_line(path, line, check):
    """Appends `line` to `path`, runs check(violations, line_number), restores the file."""
    original = open(path).read()
    number = original.count('\n') + 1
    with open(path, 'a') as f:
        f.write(line + '\n')
    try:
        check(check_deps.find_violations(tree), number)
    finally:
        with open(path, 'w') as f:
            f.write(original)


tree = tempfile.mkdtemp(prefix='check_deps_test.')
try:
    copy_tree(tree)
    clean = check_deps.find_violations(tree)
    expect('unmodified-copy-is-clean', not clean, '; '.join(clean[:3]))

    headers = []
    for dirpath, dirnames, filenames in os.walk(tree):
        headers += [os.path.relpath(os.path.join(dirpath, n), tree) for n in filenames
                    if n.endswith('.h')]
    headers.sort()
    folders = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        sources = sorted(n for n in filenames if n.endswith(check_deps.SOURCES))
        if not sources:
            continue
        folder = os.path.relpath(dirpath, tree)
        folder = '' if folder == '.' else folder
        allowed = check_deps.rules_for(tree, folder, {}) or []
        forbidden = check_deps.forbidden_for(tree, folder)
        wrong = [h for h in headers if not any(h.startswith(p) for p in allowed)
                 and not any(h.startswith(f) for f in forbidden)]
        name = 'wrong-include-in-%s' % (folder or '.')
        if not wrong:
            expect(name, False, 'the folder may include every header of the project')
            continue
        folders += 1
        rel = os.path.join(folder, sources[0])

        def check(violations, number, rel=rel, header=wrong[0], name=name):
            want = '%s:%d: includes "%s"' % (rel, number, header)
            expect(name, any(v.startswith(want) for v in violations),
                   'no violation "%s" in %s' % (want, violations))
        with_line(os.path.join(tree, rel), '#include "%s"' % wrong[0], check)
    expect('every-source-folder-tried', folders >= 15, '%d folders' % folders)

    def one(name, rel, line, want):
        def check(violations, number):
            expect(name, any(want in v for v in violations), 'none contains "%s": %s' %
                   (want, violations))
        with_line(os.path.join(tree, rel), line, check)

    one('generated-header-checked-by-its-proto', 'launcher/plan.cc',
        '#include "proto/reid_config.pb.h"', 'includes "proto/reid_config.pb.h"; launcher/DEPS')
    one('include-that-names-no-file', 'data/dataset.cc', '#include "data/no_such_header.h"',
        'names no file of the project')
    one('generated-header-of-no-proto', 'data/dataset.cc', '#include "proto/no_such.pb.h"',
        'names no file of the project')
    one('forbidden-libtorch-in-monitoring', 'monitoring/metrics.cc', '#include <torch/torch.h>',
        'monitoring/DEPS forbids')
    one('forbidden-libtorch-in-report', 'monitoring/report/report.cc', '#include <ATen/ATen.h>',
        'monitoring/report/DEPS forbids')
    one('forbidden-link', 'launcher/CMakeLists.txt',
        'target_link_libraries(reid_launcher PUBLIC reid_base)', 'says "link: none"')
    os.makedirs(os.path.join(tree, 'newlib'))
    with open(os.path.join(tree, 'newlib', 'x.cc'), 'w') as f:
        f.write('#include "base/status.h"\n')
    violations = check_deps.find_violations(tree)
    expect('folder-without-deps', any(v.startswith('newlib/: holds sources but no DEPS')
                                      for v in violations), str(violations))
    expect('readme-layout-names-every-folder',
           'README.md: the layout does not name newlib/' in violations, str(violations))
finally:
    shutil.rmtree(tree)

print('%d failure(s)' % len(failures))
sys.exit(1 if failures else 0)
