"""One concern per file: no module of dva/ grows past about 400 lines, and no function past about 60 (a little
slack over the rule, so that a guard and not a line count decides). A function is counted from its first body line: a
typer command's options are its signature, declarations rather than logic."""

import ast
from pathlib import Path

DVA = Path(__file__).resolve().parents[1] / "dva"
MODULE_LINES, FUNCTION_LINES = 450, 70


def test_no_module_or_function_in_dva_outgrows_the_rule():
    too_long = []
    for path in sorted(DVA.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MODULE_LINES:
            too_long.append(f"{path.relative_to(DVA.parent)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.body[0].lineno + 1 > FUNCTION_LINES:
                too_long.append(f"{path.relative_to(DVA.parent)}:{node.lineno} {node.name}: {node.end_lineno - node.body[0].lineno + 1} lines")
    assert not too_long, "split these by concern:\n" + "\n".join(too_long)
