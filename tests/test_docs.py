"""Every public function and class of the package has a docstring (the API reference is
built from them: mkdocs.yml, docs/hooks.py)."""

import importlib
import inspect
import pkgutil

import cljax


def test_every_public_function_and_class_has_a_docstring():
    missing = []
    for info in pkgutil.walk_packages(cljax.__path__, "cljax."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        assert (module.__doc__ or "").strip(), f"{info.name} has no module docstring"
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not (
                obj.__doc__ or ""
            ).strip():
                missing.append(f"{info.name}.{name}")
    assert not missing, f"no docstring: {', '.join(missing)}"
