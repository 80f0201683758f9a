"""YAML text to Python values, the one way dsspn reads a YAML value: a file's text and a
``--set KEY=VALUE`` override's value go through ``load``, so that a value fails the same way
(one line naming the problem) wherever it is written. No torch, no pydantic: ``dsspn --help``
and the hierarchy commands may import it."""

from __future__ import annotations


class YamlProblem(Exception):
    """Text that is not YAML, or a value PyYAML cannot convert: ``problem`` says which, in
    words; ``line`` (1-based) where the parser knows it."""

    def __init__(self, problem: str, line: int | None = None):
        super().__init__(problem)
        self.problem = problem
        self.line = line


class TooDeep(YamlProblem):
    """Text nested deeper than the parser can follow (it recursed to Python's limit)."""

    def __init__(self):
        super().__init__("nested too deeply to read")


def load(text: str):
    """``yaml.safe_load(text)``, every failure a ``YamlProblem``."""
    import yaml

    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise TooDeep() from None
    except (ValueError, TypeError, AttributeError, LookupError, OverflowError) as exc:
        # PyYAML fails to convert some values with a plain exception, not a YAMLError:
        # '2001-13-45', '!!int abc', '!!int' alone, '!!bool maybe', a 5000-digit number.
        detail = str(exc).split(";")[0] if isinstance(exc, ValueError) else type(exc).__name__
        raise YamlProblem(f"a value cannot be converted: {detail[:100]}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        # A reader error (a NUL or other character YAML forbids) has a reason, not a problem.
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or "invalid YAML"
        raise YamlProblem(problem, mark.line + 1 if mark is not None else None) from None


__all__ = ["load", "YamlProblem", "TooDeep"]
