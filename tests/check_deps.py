#!/usr/bin/python3
"""The one-way dependency rules between folders (docs/design.md), checked over the include lines as
Chromium's checkdeps does: each folder's DEPS file lists the project paths its files may include
("+prefix" lines; a prefix is a folder ending in "/" or one file); a folder without DEPS inherits
its parent's, and every folder that holds sources must be covered by some DEPS file (the root has
none, so a new top-level folder without one is reported). Project includes are the quoted ones
that name a file of this repository; a generated protobuf header ("proto/x.pb.h") counts as its
.proto ("proto/x.proto"), and a quoted include under a project folder that names no file (nor a
.proto) is reported too. "-prefix" lines forbid any include (quoted or <angle>) starting with
prefix, e.g. "-torch/" keeps LibTorch out of monitoring/. A DEPS line "link: none" also forbids the
folder's CMakeLists.txt to link any library defined elsewhere in the project (reid-launch starts
trainers and links none of their libraries). Exit 1 listing every violation.
Usage: tests/check_deps.py [ROOT]"""
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


def rules_for(root, folder, cache):
    """Allowed include prefixes of `folder` (relative), from the nearest DEPS file upwards."""
    if folder in cache:
        return cache[folder]
    path = os.path.join(root, folder, 'DEPS')
    if os.path.exists(path):
        allowed = [line[1:].strip() for line in open(path) if line.startswith('+')]
    elif folder:
        allowed = rules_for(root, os.path.dirname(folder), cache)
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


def project_target(root, target, top_folders):
    """The repository file a quoted include names (a .pb.h maps to its .proto), '' for a system or
    relative include, None for one under a project folder that names nothing."""
    if os.path.exists(os.path.join(root, target)):
        return target
    if target.endswith('.pb.h'):
        proto = target[:-len('.pb.h')] + '.proto'
        if os.path.exists(os.path.join(root, proto)):
            return proto
    if target.split('/', 1)[0] in top_folders and '/' in target:
        return None
    return ''


FOLDER = re.compile(r'^[a-z_]+(/[a-z_]+)*/$')


def layout_violations(root):
    """The README's "## Layout" block against the folders: every folder it names exists, and
    every folder with a DEPS file and every top-level folder is named there."""
    readme = os.path.join(root, 'README.md')
    if not os.path.exists(readme):
        return []
    text = open(readme).read()
    if '## Layout' not in text:
        return ['README.md: no "## Layout" section']
    block = text.split('## Layout', 1)[1].split('```')[1]
    named = set()
    for line in block.splitlines():
        words = line.split()
        if not words:
            continue
        if all(FOLDER.match(w) for w in words):
            named.update(w.rstrip('/') for w in words)
        elif FOLDER.match(words[0]):
            named.add(words[0].rstrip('/'))
    violations = ['README.md: the layout names %s/, which does not exist' % f
                  for f in sorted(named) if not os.path.isdir(os.path.join(root, f))]
    wanted = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if d not in SKIP and not d.startswith(('build', '.'))]
        folder = os.path.relpath(dirpath, root)
        if folder != '.' and 'DEPS' in filenames:
            wanted.add(folder)
    wanted.update(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                  and d not in SKIP and not d.startswith(('build', '.')) and d != 'pretrained')
    violations += ['README.md: the layout does not name %s/' % f for f in sorted(wanted - named)]
    return violations


def find_violations(root):
    """Every violation under `root`, as printable lines."""
    violations = []
    top_folders = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                   and d not in SKIP and not d.startswith(('build', '.'))}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP and not d.startswith('build'))
        folder = os.path.relpath(dirpath, root)
        folder = '' if folder == '.' else folder
        sources = sorted(n for n in filenames if n.endswith(SOURCES))
        if not sources:
            continue
        allowed = rules_for(root, folder, {})
        if allowed is None:
            violations.append('%s/: holds sources but no DEPS file covers it' % (folder or '.'))
            continue
        forbidden = forbidden_for(root, folder)
        for name in sources:
            path = os.path.join(dirpath, name)
            for number, line in enumerate(open(path, errors='replace'), 1):
                any_include = ANY_INCLUDE.match(line)
                if any_include and any(any_include.group(1).startswith(f) for f in forbidden):
                    violations.append('%s:%d: includes %s; %s/DEPS forbids %s' % (
                        os.path.relpath(path, root), number, any_include.group(1),
                        folder or '.', ', '.join(forbidden)))
                    continue
                m = INCLUDE.match(line)
                if not m:
                    continue
                target = project_target(root, m.group(1), top_folders)
                if target is None:
                    violations.append('%s:%d: includes "%s", which names no file of the project' %
                                      (os.path.relpath(path, root), number, m.group(1)))
                    continue
                if not target:
                    continue  # system or relative include
                if not any(target.startswith(prefix) for prefix in allowed):
                    violations.append('%s:%d: includes "%s"; %s/DEPS allows only %s' % (
                        os.path.relpath(path, root), number, m.group(1), folder or '.',
                        ', '.join(allowed)))
    violations += link_violations(root)
    violations += layout_violations(root)
    return violations


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else '.'
    violations = find_violations(root)
    for v in violations:
        print(v)
    print('%d dependency violation(s)' % len(violations))
    return 1 if violations else 0


if __name__ == '__main__':
    sys.exit(main())
