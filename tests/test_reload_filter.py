"""Unit tests of `--reload`'s file filter (`FileFilter`), on real files in tmp_path.

Which changed file restarts the server: `*.py` by default, minus the default
excludes (`.*`, `*.py[cod]`, `.sw.*`, `~*`, `__pycache__`), plus `--reload-include`
globs, minus `--reload-exclude` globs; a pattern naming an existing directory
includes or excludes everything below it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fastserve.supervisors.reload import FileFilter

FILES = [
    "app.py",
    "pkg/__init__.py",
    "pkg/mod.py",
    "pkg/deep/er/mod.py",
    "README.md",
    "notes.txt",
    "templates/index.html",
    "templates/mail.txt",
    "static/site.css",
    "static/img/logo.bin",
    "static/.hidden.css",
    ".hidden.py",
    ".env",
    ".sw.py",
    ".git/config",
    ".git/hooks/pre-commit.py",
    ".venv/lib/site.py",
    "pkg/.cache/cached.py",
    "pkg/__pycache__/mod.py",
    "pkg/__pycache__/mod.cpython-311.pyc",
    "compiled.pyc",
    "optimized.pyo",
    "extension.pyd",
    "~lock.py",
    "~backup",
    "app_test.py",
    "migrations/0001_initial.py",
    "build/lib/app.py",
    "pkg/build/gen.py",
    "builder.py",
    "vendor/lib.py",
    "vendor/sub/lib.py",
    "vendored.py",
]


@pytest.fixture(autouse=True)
def neutral_cwd(tmp_path: Path, monkeypatch) -> None:
    """A pattern naming an existing directory (relative to the current directory)
    means that directory: run where no pattern of these tests names one, unless a
    test changes directory itself."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path.resolve() / "project"
    for name in FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
    return root


def watched(project: Path, includes=(), excludes=()) -> set:
    """The files (relative, posix) the filter keeps."""
    file_filter = FileFilter([project], list(includes), list(excludes))
    return {name for name in FILES if file_filter(project / name)}


DEFAULT_WATCHED = {
    "app.py",
    "pkg/__init__.py",
    "pkg/mod.py",
    "pkg/deep/er/mod.py",
    "app_test.py",
    "migrations/0001_initial.py",
    "build/lib/app.py",
    "pkg/build/gen.py",
    "builder.py",
    "vendor/lib.py",
    "vendor/sub/lib.py",
    "vendored.py",
}


def test_defaults(project):
    assert watched(project) == DEFAULT_WATCHED


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.py",  # .*
        ".sw.py",  # .sw.* (and .*)
        ".git/hooks/pre-commit.py",  # a hidden directory on the path
        ".venv/lib/site.py",
        "pkg/.cache/cached.py",
        "pkg/__pycache__/mod.py",
        "~lock.py",  # ~*
    ],
)
def test_default_excludes_win_over_the_default_include(project, name):
    assert FileFilter([project], [], [])(project / name) is False


@pytest.mark.parametrize(
    "name",
    [
        # *.py[cod]
        "compiled.pyc",
        "optimized.pyo",
        "extension.pyd",
        "pkg/__pycache__/mod.cpython-311.pyc",
        # .*, ~*
        ".env",
        ".git/config",
        "static/.hidden.css",
        "~backup",
    ],
)
def test_default_excludes_hold_against_a_catch_all_include(project, name):
    """`--reload-include '*'` watches everything but what the defaults exclude."""
    assert FileFilter([project], ["*"], [])(project / name) is False


def test_catch_all_include_watches_ordinary_files(project):
    file_filter = FileFilter([project], ["*"], [])
    for name in ("README.md", "notes.txt", "templates/index.html", "static/img/logo.bin"):
        assert file_filter(project / name), name


@pytest.mark.parametrize(
    "includes, added",
    [
        (["*.html"], {"templates/index.html"}),
        (["*.html", "*.css"], {"templates/index.html", "static/site.css"}),
        (["*.txt"], {"notes.txt", "templates/mail.txt"}),
        (["templates/*.txt"], {"templates/mail.txt"}),
        (["README.md"], {"README.md"}),
        (["*.py"], set()),  # the default again: nothing new
        # an explicit include of a default exclude pattern lifts that exclude
        # (.sw.py stays out: .sw.* still excludes it)
        (
            [".*"],
            {
                ".env",
                ".hidden.py",
                ".git/config",
                ".git/hooks/pre-commit.py",
                ".venv/lib/site.py",
                "pkg/.cache/cached.py",
                "static/.hidden.css",
            },
        ),
    ],
)
def test_reload_include(project, includes, added):
    assert watched(project, includes=includes) == DEFAULT_WATCHED | added


@pytest.mark.parametrize(
    "excludes, removed",
    [
        (["*_test.py"], {"app_test.py"}),
        (["migrations/*"], {"migrations/0001_initial.py"}),
        # a name that is no existing directory: matched against every directory on the path
        (["build"], {"build/lib/app.py", "pkg/build/gen.py"}),
        (["deep"], {"pkg/deep/er/mod.py"}),
        (["app.py"], {"app.py", "build/lib/app.py"}),
        (["pkg/*"], {"pkg/__init__.py", "pkg/mod.py", "pkg/deep/er/mod.py", "pkg/build/gen.py"}),
        (["*"], DEFAULT_WATCHED),
    ],
)
def test_reload_exclude(project, excludes, removed):
    assert watched(project, excludes=excludes) == DEFAULT_WATCHED - removed


def test_exclude_wins_over_include(project):
    assert watched(project, includes=["*.html"], excludes=["index.*"]) == DEFAULT_WATCHED


def test_excluded_directory_by_absolute_path(project):
    result = watched(project, excludes=[str(project / "vendor")])
    assert result == DEFAULT_WATCHED - {"vendor/lib.py", "vendor/sub/lib.py"}
    assert "vendored.py" in result


def test_excluded_directory_by_relative_path(project, monkeypatch):
    # A pattern naming an existing directory is resolved against the current directory,
    # as `--reload-exclude vendor` is when run in the project.
    monkeypatch.chdir(project)
    result = watched(project, excludes=["vendor", "pkg/deep"])
    assert result == DEFAULT_WATCHED - {"vendor/lib.py", "vendor/sub/lib.py", "pkg/deep/er/mod.py"}


def test_included_directory_watches_every_file_below_it(project):
    result = watched(project, includes=[str(project / "static")])
    # .hidden.css stays excluded: excludes are checked first
    assert result == DEFAULT_WATCHED | {"static/site.css", "static/img/logo.bin"}


def test_default_excludes_stay_globs_when_the_current_directory_has_such_a_directory(
    project, monkeypatch
):
    """`fastserve --reload` is run in the project root, which usually has a
    `__pycache__/` of its own: the default `__pycache__` exclude must still hold
    for every `__pycache__` below, not only for that one directory."""
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "app.cpython-311.pyc").write_text("")
    monkeypatch.chdir(project)
    file_filter = FileFilter([project], ["*"], [])
    assert not file_filter(project / "__pycache__" / "app.cpython-311.pyc")
    assert not file_filter(project / "pkg" / "__pycache__" / "mod.py")
    assert not file_filter(project / "pkg" / "__pycache__" / "mod.cpython-311.pyc")
    assert file_filter.excluded_dir(project / "pkg" / "__pycache__")


def test_excluded_dir(project):
    file_filter = FileFilter([project], [], [str(project / "vendor"), "build"])
    assert file_filter.excluded_dir(project / ".git")
    assert file_filter.excluded_dir(project / ".venv")
    assert file_filter.excluded_dir(project / "__pycache__")
    assert file_filter.excluded_dir(project / "pkg" / "__pycache__")
    assert file_filter.excluded_dir(project / "vendor")
    assert file_filter.excluded_dir(project / "vendor" / "sub")
    assert file_filter.excluded_dir(project / "build")
    assert file_filter.excluded_dir(project / "pkg" / "build")
    assert not file_filter.excluded_dir(project / "pkg")
    assert not file_filter.excluded_dir(project / "pkg" / "deep")
    assert not file_filter.excluded_dir(project / "templates")


def test_several_watched_directories(tmp_path):
    first = tmp_path.resolve() / "first"
    second = tmp_path.resolve() / "second"
    for path in (
        first / "a.py",
        first / "skip" / "b.py",
        second / "skip" / "c.py",
        second / "d.txt",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    file_filter = FileFilter([first, second], ["*.txt"], ["skip/*"])
    assert file_filter(first / "a.py")
    assert not file_filter(first / "skip" / "b.py")
    assert not file_filter(second / "skip" / "c.py")
    assert file_filter(second / "d.txt")


def test_a_file_outside_the_watched_directories_is_judged_by_its_name(tmp_path, project):
    outside = tmp_path.resolve() / "elsewhere"
    outside.mkdir()
    (outside / "x.py").write_text("")
    (outside / ".x.py").write_text("")
    file_filter = FileFilter([project], [], [])
    assert file_filter(outside / "x.py")
    assert not file_filter(outside / ".x.py")
