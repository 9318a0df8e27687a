#!/usr/bin/python3
"""The one-way dependency rules between folders (docs/design.md 2.4), checked over the include
lines as Chromium's checkdeps does: each folder's DEPS file lists the project folders its files may
include ("+prefix/" lines); a folder without DEPS inherits its parent's. Project includes are the
quoted ones that name a file of this repository. "-prefix" lines forbid any include (quoted or
<angle>) starting with prefix, e.g. "-torch/" keeps LibTorch out of monitoring/. A DEPS line
"link: none" also forbids the folder's CMakeLists.txt to link any library defined elsewhere in the
project (reid-launch starts trainers and links none of their libraries). Exit 1 listing every
violation. Usage: tests/check_deps.py [ROOT]"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
ANY_INCLUDE = re.compile(r'^\s*#\s*include\s+["<]([^">]+)[">]')
SOURCES = ('.h', '.cc', '.cu', '.cuh')
SKIP = {'build', '.git', 'runs', 'shared'}


def forbidden_for(root, folder):
    """Forbidden include prefixes ("-" lines) of the nearest DEPS file of `folder`, upwards."""
    while True:
        path = os.path.join(root, folder, 'DEPS')
        if os.path.exists(path):
            return [line[1:].strip() for line in open(path) if line.startswith('-')]
        if not folder:
            return []
        folder = os.path.dirname(folder)


def rules_for(root, folder, cache={}):
    """Allowed include prefixes of `folder` (relative), from the nearest DEPS file upwards."""
    if folder in cache:
        return cache[folder]
    path = os.path.join(root, folder, 'DEPS')
    if os.path.exists(path):
        allowed = [line[1:].strip() for line in open(path) if line.startswith('+')]
    elif folder:
        allowed = rules_for(root, os.path.dirname(folder))
    else:
        allowed = None  # no rule at the top: anything goes
    cache[folder] = allowed
    return allowed


ADD_LIBRARY = re.compile(r'add_library\(\s*([A-Za-z0-9_.:+-]+)')
LINK = re.compile(r'target_link_libraries\(([^)]*)\)', re.S)


def link_violations(root):
    """Project libraries linked from folders whose DEPS says "link: none"."""
    defined = {}  # library -> folder of the CMakeLists.txt that defines it
    folders = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP and not d.startswith('build')]
        if 'CMakeLists.txt' not in filenames:
            continue
        folder = os.path.relpath(dirpath, root)
        text = open(os.path.join(dirpath, 'CMakeLists.txt'), errors='replace').read()
        for name in ADD_LIBRARY.findall(text):
            defined[name] = folder
        deps = os.path.join(dirpath, 'DEPS')
        if os.path.exists(deps) and any(l.strip() == 'link: none' for l in open(deps)):
            folders.append((folder, text))
    violations = []
    for folder, text in folders:
        for args in LINK.findall(text):
            for word in args.split()[1:]:
                if defined.get(word, folder) != folder:
                    violations.append('%s/CMakeLists.txt: links %s (defined in %s/); %s/DEPS says '
                                      '"link: none"' % (folder, word, defined[word], folder))
    return violations


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else '.'
    violations = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP and not d.startswith('build')]
        folder = os.path.relpath(dirpath, root)
        folder = '' if folder == '.' else folder
        allowed = rules_for(root, folder)
        if allowed is None:
            continue
        forbidden = forbidden_for(root, folder)
        for name in filenames:
            if not name.endswith(SOURCES):
                continue
            path = os.path.join(dirpath, name)
            for number, line in enumerate(open(path, errors='replace'), 1):
                any_include = ANY_INCLUDE.match(line)
                if any_include and any(any_include.group(1).startswith(f) for f in forbidden):
                    violations.append('%s:%d: includes %s; %s/DEPS forbids %s' % (
                        os.path.relpath(path, root), number, any_include.group(1),
                        folder or '.', ', '.join(forbidden)))
                    continue
                m = INCLUDE.match(line)
                if not m or not os.path.exists(os.path.join(root, m.group(1))):
                    continue  # system, generated (.pb.h) or relative includes
                target = m.group(1)
                if not any(target.startswith(prefix) for prefix in allowed):
                    violations.append('%s:%d: includes "%s"; %s/DEPS allows only %s' % (
                        os.path.relpath(path, root), number, target, folder or '.',
                        ', '.join(allowed)))
    violations += link_violations(root)
    for v in violations:
        print(v)
    print('%d dependency violation(s)' % len(violations))
    return 1 if violations else 0


if __name__ == '__main__':
    sys.exit(main())
