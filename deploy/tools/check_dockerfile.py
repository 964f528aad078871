"""Checks deploy/Dockerfile without a Docker engine.

The file is parsed by BuildKit's own Dockerfile parser (the `dockerfile` package wraps the Go
parser of moby/buildkit), then held to what the image promises:
- multi-stage, every base image pinned to a tag or digest (never `latest`);
- the final stage runs as a numeric non-root user and has an ENTRYPOINT;
- `COPY --from` names an earlier stage;
- every path copied from the build context exists and is not excluded by .dockerignore, and
  together they contain every member of the Cargo workspace (a new member outside them would
  break `cargo build --locked` in the image);
- the build runs `cargo build --release --locked -p patron`.

    check_dockerfile.py REPO_ROOT
"""

from __future__ import annotations

import fnmatch
import re
import sys
import tomllib
from pathlib import Path

import dockerfile


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def ignored(path: str, patterns: list[str]) -> bool:
    hit = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            matched = fnmatch.fnmatch(Path(path).name, pattern[3:])
        else:
            matched = path == pattern or path.startswith(pattern + "/") or fnmatch.fnmatch(path, pattern)
        if matched:
            hit = not negate
    return hit


def main(root: Path) -> int:
    problems: list[str] = []
    try:
        commands = dockerfile.parse_file(str(root / "deploy" / "Dockerfile"))
    except dockerfile.GoParseError as error:
        print(f"Dockerfile: BuildKit's parser rejects it: {error}")
        return 1
    patterns = [
        line.strip() for line in (root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    global_args: dict[str, str] = {}
    stages: list[dict] = []
    for c in commands:
        if c.cmd == "ARG" and not stages:
            name, _, default = c.value[0].partition("=")
            global_args[name] = default
        elif c.cmd == "FROM":
            image = substitute(c.value[0], global_args)
            name = c.value[2] if len(c.value) == 3 and c.value[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "commands": []})
        elif stages:
            stages[-1]["commands"].append(c)

    names = [s["name"] for s in stages]
    if len(stages) < 2:
        problems.append("expected a multi-stage build")
    for i, stage in enumerate(stages):
        image = stage["image"]
        if image in names[:i]:
            continue
        tag = image.split("@")[0].rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
            problems.append(f"base image {image!r} is not pinned to a tag or digest")
        for c in stage["commands"]:
            for flag in c.flags:
                if flag.startswith("--from=") and flag[7:] not in names[:i]:
                    problems.append(f"line {c.start_line}: {flag} names no earlier stage")

    final = stages[-1]["commands"] if stages else []
    users = [c.value[0] for c in final if c.cmd == "USER"]
    uid = users[-1].split(":")[0] if users else "0"
    if not uid.isdigit() or uid == "0":
        problems.append(f"the runtime stage must end with a numeric non-root USER (has {users or 'none'})")
    if not any(c.cmd == "ENTRYPOINT" for c in final):
        problems.append("the runtime stage has no ENTRYPOINT")

    copied: list[str] = []
    for stage in stages:
        for c in stage["commands"]:
            if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from=") for f in c.flags):
                copied.extend(p.rstrip("/") for p in c.value[:-1])
    for path in copied:
        if not (root / path).exists():
            problems.append(f"COPY {path}: not in the repository")
        elif ignored(path, patterns):
            problems.append(f"COPY {path}: excluded from the build context by .dockerignore")
    members = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["members"]
    for member in members:
        if not any(member == p or member.startswith(p + "/") for p in copied):
            problems.append(f"workspace member {member} is not copied into the build stage")

    runs = " ".join(" ".join(c.value) for s in stages for c in s["commands"] if c.cmd == "RUN")
    if not re.search(r"cargo build --release --locked -p patron\b", runs):
        problems.append("no RUN does `cargo build --release --locked -p patron`")

    if problems:
        print(f"Dockerfile: {len(problems)} problem(s):")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(f"Dockerfile: {len(stages)} stages parsed by BuildKit's parser; base images pinned "
          f"({', '.join(s['image'] for s in stages if s['image'] not in names)}); runtime runs as "
          f"{users[-1]}; the build context copy holds all {len(members)} workspace members")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
