"""Building the Docker image where no base image can be pulled (CI, this project's machines).

Used once per test session by ``tests/test_docker_image.py``; by hand::

    python tests/docker_support.py base                        # the local base image only
    python tests/docker_support.py build [--tag ainerd:local]

1. **Base image.** The Dockerfile's ``FROM ${BASE_IMAGE}`` defaults to ``debian:bookworm-slim``.
   Without a registry, :func:`ensure_base_image` builds the same distribution locally: Debian
   bookworm ``debootstrap --variant=minbase`` from the host's own Debian mirror (its apt sources)
   with the Dockerfile's apt packages (:data:`BASE_PACKAGES`), and ``docker import`` s it as
   :data:`BASE_TAG` (kept between runs: built once per machine, about 1 min).
2. **Package index and certificate trust.** pip inside a build needs the host's settings (here:
   PyPI through a TLS-intercepting proxy whose CA is in the host's bundle, plus local indexes and a
   local wheel folder with the CPU torch wheel). :func:`pip_secrets` translates the host's pip
   configuration (``pip config list``, ``PIP_*`` variables included) into a pip.conf whose local
   paths become ``http://127.0.0.1:<port>/...`` served read-only by :class:`LocalIndex` for the
   duration of the build (the build runs with host networking), and hands pip.conf and the CA
   bundle to the build as BuildKit secrets: mounted only while the install step runs, never in a
   layer (``test_docker_image`` checks the image's files and history).
3. **Docker CLI.** BuildKit secrets need either the buildx plugin or a CLI older than 23 (which
   has BuildKit built in): :func:`docker_cli` picks such a CLI (Debian's ``docker.io`` ships
   /usr/bin/docker 20.10; a newer static CLI without buildx refuses ``DOCKER_BUILDKIT=1``).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.server
import os
import re
import secrets as secrets_module
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parents[1]
# the Dockerfile's apt packages (keep the two lists equal); the tag changes with the list, so a
# machine that built the base before a package was added builds a new one
BASE_PACKAGES = ("python3", "python3-venv", "make", "ca-certificates", "libcairo2")
BASE_TAG = "ainerd-base:bookworm-" + hashlib.sha256(" ".join(BASE_PACKAGES).encode()).hexdigest()[:10]
SUITE = "bookworm"  # the Dockerfile's default base is debian:bookworm-slim: keep them the same


class DockerUnavailable(RuntimeError):
    """No usable Docker CLI, daemon or debootstrap; the message says which."""


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@functools.cache
def docker_cli() -> str:
    """Path of a Docker CLI that can run BuildKit builds against a running daemon."""
    candidates = []
    for c in (os.environ.get("AINERD_DOCKER_CLI"), shutil.which("docker"), "/usr/bin/docker"):
        if c and os.path.exists(c) and c not in candidates:
            candidates.append(c)
    if not candidates:
        raise DockerUnavailable("no docker CLI (apt-get install docker.io)")
    reasons = []
    for cli in candidates:
        try:
            info = _run([cli, "version", "--format", "{{.Client.Version}} {{.Server.Version}}"], timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{cli}: {exc}")
            continue
        if info.returncode != 0:
            reasons.append(f"{cli}: daemon not reachable ({(info.stderr.strip().splitlines() or ['?'])[-1]})")
            continue
        client = info.stdout.split()[0]
        major = int(re.match(r"(\d+)", client).group(1))
        if major < 23 or _run([cli, "buildx", "version"], timeout=30).returncode == 0:
            return cli
        reasons.append(f"{cli}: client {client} without the buildx plugin cannot use BuildKit secrets")
    raise DockerUnavailable("; ".join(reasons))


def docker(*args, check=True, timeout=600, **kw) -> subprocess.CompletedProcess:
    """Run the chosen docker CLI; on failure raise with its stderr."""
    proc = _run([docker_cli(), *args], timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, timeout=60).returncode == 0


def host_debian_mirror() -> str:
    """The host's main Debian mirror (first ``deb`` source that is not the security archive)."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file() and p.suffix in ("", ".list", ".sources"):
            texts.append(p.read_text(errors="replace"))
    urls = []
    for text in texts:
        urls += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, flags=re.M)  # one-line style
        urls += [u for line in re.findall(r"^\s*URIs:\s*(.+)$", text, flags=re.M) for u in line.split()]  # deb822
    for url in urls:
        if "security" not in url and "/debian" in url:
            return url.rstrip("/")
    return "http://deb.debian.org/debian"


def ensure_base_image(tag: str = BASE_TAG, log=print) -> float:
    """Build the local base image (debootstrap + docker import) unless it exists; seconds spent."""
    if image_exists(tag):
        return 0.0
    debootstrap = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if os.path.exists("/usr/sbin/debootstrap") else None)
    if not debootstrap:
        raise DockerUnavailable("no debootstrap to build the base image (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise DockerUnavailable("debootstrap needs root to build the base image")
    t0 = time.perf_counter()
    mirror = host_debian_mirror()
    with tempfile.TemporaryDirectory(prefix="ainerd-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrap {SUITE} from {mirror} ...")
        proc = _run([debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(root), mirror],
                    timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        # what debian:bookworm-slim leaves out too: downloaded packages, package lists, docs
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                    "usr/share/info", "usr/share/locale"):
            target = root / sub
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    elif child.name != "lock":
                        child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run([docker_cli(), "import", "--change", 'CMD ["bash"]', "-", tag], stdin=tar.stdout,
                             capture_output=True, text=True, timeout=900)
        tar.stdout.close()
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import failed: {imp.stderr[-2000:]}")
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------
# The host's pip settings, made reachable from inside a build

def host_pip_settings() -> dict[str, str]:
    """pip's effective global settings on this host: config files, then PIP_* variables (later
    wins, as in pip). Keys without their section, e.g. ``find-links``."""
    proc = _run([sys.executable, "-m", "pip", "config", "list"], timeout=60)
    settings: dict[str, str] = {}
    env_items = []
    for line in proc.stdout.splitlines():
        m = re.match(r"^([^.=]*)\.([\w-]+)='(.*)'$", line.strip())
        if not m:
            continue
        section, key, value = m.groups()
        if section == ":env:":
            env_items.append((key, value))
        elif section in ("global", "install", "download"):
            settings[key] = value
    settings.update(env_items)
    return settings


class LocalIndex:
    """Serve a few local folders read-only over HTTP on 127.0.0.1 (a random port) for the time
    of a build; ``url(path)`` gives the address of a path inside one of them."""

    def __init__(self, folders: list[Path]):
        self.roots = {str(i): Path(f).resolve() for i, f in enumerate(dict.fromkeys(folders))}
        roots = self.roots

        class Handler(http.server.SimpleHTTPRequestHandler):
            def translate_path(self, path):
                parts = unquote(urlparse(path).path).lstrip("/").split("/", 1)
                root = roots.get(parts[0])
                if root is None:
                    return "/nonexistent"
                target = (root / (parts[1] if len(parts) > 1 else "")).resolve()
                # nothing outside the served folders, whatever the path or a symlink says
                return str(target) if target == root or root in target.parents else "/nonexistent"

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: Path) -> str:
        path = Path(path).resolve()
        for key, root in self.roots.items():
            if path == root or root in path.parents:
                rel = path.relative_to(root).as_posix()
                return f"http://127.0.0.1:{self.port}/{key}/{rel}".rstrip("/") + "/"
        raise ValueError(f"{path} is not served")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _local_path(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(unquote(urlparse(location).path))
    if "://" not in location:
        return Path(location)
    return None


@contextlib.contextmanager
def pip_secrets(workdir: Path, marker: str = ""):
    """Yield ``{secret id: file}`` for ``docker build --secret``: a pip.conf equivalent to the
    host's (local folders served by a :class:`LocalIndex` while the context is open) and the CA
    bundle pip trusts here. Empty when the host has no special settings. ``marker``: a comment
    line written into pip.conf, to search the finished image for."""
    settings = host_pip_settings()
    lists = {k: settings.get(k, "").split() for k in ("index-url", "extra-index-url", "find-links")}
    folders = []
    for key, values in lists.items():
        for v in values:
            p = _local_path(v)
            if p is not None and p.exists():
                # an index's pages link to ../../files: serve the folder above simple/
                folders.append(p.parent if key != "find-links" and p.name == "simple" else p)
    with contextlib.ExitStack() as stack:
        index = stack.enter_context(LocalIndex(folders)) if folders else None
        conf = ["[global]", f"# {marker}"] if marker else ["[global]"]
        for key, values in lists.items():
            urls = []
            for v in values:
                p = _local_path(v)
                if p is None:
                    urls.append(v)
                elif p.exists():
                    urls.append(index.url(p))
            if urls:
                conf.append(f"{key} = {' '.join(urls)}")
        if index:
            conf.append("trusted-host = 127.0.0.1")
        for key in ("default-timeout", "retries", "proxy", "timeout"):
            if settings.get(key):
                conf.append(f"{key} = {settings[key]}")
        proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
        if proxy and not settings.get("proxy"):
            conf.append(f"proxy = {proxy}")
        files = {}
        cert = settings.get("cert") or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
        if cert and Path(cert).is_file():
            files["ca.crt"] = Path(cert)
            conf.append("cert = /run/secrets/ca.crt")
        if any(not line.startswith(("[", "#")) for line in conf):
            path = Path(workdir) / "pip.conf"
            path.write_text("\n".join(conf) + "\n")
            path.chmod(0o600)
            files["pip.conf"] = path
        yield files


def build_image(tag: str, *, base: str | None = BASE_TAG, log=print, extra_args=(), build_log: Path | None = None) -> dict:
    """``docker build`` the repository as ``tag`` (host network, BuildKit, the host's pip
    settings as secrets). Returns timings, the image size, the secret's marker (a random line
    of the pip.conf secret, never to be found in the image) and the build log's path."""
    figures = {"secret_marker": f"ainerd-build-secret-{secrets_module.token_hex(12)}"}
    if base:
        figures["base_build_s"] = round(ensure_base_image(base, log=log), 1)
    t0 = time.perf_counter()
    build_log = Path(build_log or tempfile.mkstemp(prefix="ainerd-docker-build-", suffix=".log")[1])
    figures["build_log"] = str(build_log)
    with tempfile.TemporaryDirectory(prefix="ainerd-docker-") as tmp, \
            pip_secrets(Path(tmp), figures["secret_marker"]) as secrets:
        cmd = [docker_cli(), "build", "--network", "host", "--progress", "plain", "-t", tag]
        if base:
            cmd += ["--build-arg", f"BASE_IMAGE={base}"]
        # the image carries its own cache metadata: a rebuild reuses its unchanged layers (the pip
        # install above all) even after `docker builder prune`
        cmd += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
        if image_exists(tag):
            cmd += ["--cache-from", tag]
        if "pip.conf" in secrets:
            # the torch wheel comes from the host's settings (a local CPU wheel), not the CPU index
            cmd += ["--build-arg", "TORCH_INDEX_URL="]
        for sid, path in secrets.items():
            cmd += ["--secret", f"id={sid},src={path}"]
        cmd += [*extra_args, str(REPO)]
        log("$ " + " ".join(shlex.quote(c) for c in cmd))
        env = dict(os.environ, DOCKER_BUILDKIT="1")
        with open(build_log, "w") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=3600)
    figures["build_s"] = round(time.perf_counter() - t0, 1)
    if proc.returncode != 0:
        tail = build_log.read_text(errors="replace")[-6000:]
        raise RuntimeError(f"docker build failed after {figures['build_s']} s ({build_log}):\n{tail}")
    size = docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
    figures["image_mb"] = round(int(size) / 1e6, 1)
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build the AI-NERD image without a registry (local Debian base).")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("base", help=f"build the local base image {BASE_TAG} unless it exists")
    b = sub.add_parser("build")
    b.add_argument("--tag", default="ainerd:local")
    b.add_argument("--base", default=BASE_TAG, help="base image; '' = the Dockerfile's default (pulled)")
    args = p.parse_args(argv)
    if args.cmd == "base":
        print(f"{BASE_TAG}: built in {ensure_base_image(log=lambda m: print(m, file=sys.stderr)):.1f} s")
        return 0
    figures = build_image(args.tag, base=args.base or None, log=lambda m: print(m, file=sys.stderr))
    print(Path(figures["build_log"]).read_text(errors="replace")[-1500:], file=sys.stderr)
    print(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
