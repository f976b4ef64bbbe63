"""Ollama's Modelfile: written from the checkpoint's chat template, and parsed against its documented grammar
(ollama/docs/modelfile.md).

An instruction per line, `INSTRUCTION arguments`, instructions case-insensitive, `#` comments; an argument may
be "quoted" or span lines inside triple quotes. FROM is required. PARAMETER takes a known name and a value of its
type; `stop` may repeat.
"""
from pipeline.checkpoint import CheckpointError

INSTRUCTIONS = {"FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE", "REQUIRES"}
PARAMETERS = {"num_ctx": int, "repeat_last_n": int, "repeat_penalty": float, "temperature": float, "seed": int,
              "stop": str, "num_predict": int, "top_k": int, "top_p": float, "min_p": float}
KINDS = {int: "an integer", float: "a number", str: "a string"}
MESSAGE_ROLES = {"system", "user", "assistant"}
TRIPLE = '"""'
ROLES = ("system", "user", "assistant")
PROBE = "\x00{}\x00"  # a message content no template contains


class ModelfileError(ValueError):
    """A Modelfile that Ollama would refuse, or one that disagrees with its checkpoint."""


def unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, argument) in order; a triple-quoted argument keeps its text verbatim."""
    found, lines, index = [], text.split("\n"), 0
    while index < len(lines):
        line, number = lines[index].strip(), index + 1
        index += 1
        if not line or line.startswith("#"):
            continue
        name, _, argument = line.partition(" ")
        if name.upper() not in INSTRUCTIONS:
            raise ModelfileError(f"line {number}: unknown instruction {name!r}")
        argument = argument.strip()
        if argument.startswith(TRIPLE):
            body = lines[index - 1].split(TRIPLE, 1)[1]
            while TRIPLE not in body:
                if index >= len(lines):
                    raise ModelfileError(f"line {number}: {name} opens {TRIPLE} and never closes it")
                body += "\n" + lines[index]
                index += 1
            body, _, rest = body.partition(TRIPLE)
            if rest.strip():
                raise ModelfileError(f"line {index}: text after the closing {TRIPLE}: {rest.strip()!r}")
            argument = body
        elif not argument:
            raise ModelfileError(f"line {number}: {name} has no argument")
        else:
            argument = unquote(argument)
        found.append((number, name.upper(), argument))
    return found


def parse(text: str) -> dict:
    """{"FROM": str, "TEMPLATE", "SYSTEM", "LICENSE": str or None, "parameters": {name: [values]}, "messages"}."""
    parsed = {"FROM": None, "TEMPLATE": None, "SYSTEM": None, "LICENSE": None, "parameters": {}, "messages": []}
    for number, name, argument in instructions(text):
        if name == "PARAMETER":
            key, _, value = argument.partition(" ")
            if not value.strip():
                raise ModelfileError(f"line {number}: PARAMETER needs a name and a value, got {argument!r}")
            if key not in PARAMETERS:
                raise ModelfileError(f"line {number}: unknown parameter {key!r}")
            try:
                typed = PARAMETERS[key](unquote(value.strip()))
            except ValueError:
                raise ModelfileError(f"line {number}: {key} needs {KINDS[PARAMETERS[key]]}, got {value!r}")
            parsed["parameters"].setdefault(key, []).append(typed)
        elif name == "MESSAGE":
            role, _, content = argument.partition(" ")
            if role not in MESSAGE_ROLES:
                raise ModelfileError(f"line {number}: MESSAGE role {role!r} is none of {sorted(MESSAGE_ROLES)}")
            parsed["messages"].append({"role": role, "content": unquote(content.strip())})
        else:
            parsed[name] = argument
    if not parsed["FROM"]:
        raise ModelfileError("no FROM instruction: Ollama requires one")
    return parsed


def render(tokenizer, template: str, messages: list[dict], generation_prompt: bool = True) -> str:
    """The chat template rendered as transformers renders it (apply_chat_template refuses an empty chat)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        add_generation_prompt=generation_prompt, **tokenizer.special_tokens_map)
    return rendered[0]


def ollama_template(tokenizer, template: str) -> str:
    """The checkpoint's chat template as a Go text/template over Ollama's .Messages.

    Each role's text around a message is read off the Jinja template itself; a conversation of every role
    checks that the pieces compose, so a template that does not render message by message is refused.
    """
    generation = render(tokenizer, template, [])
    pieces = {}
    for role in ROLES:
        text = render(tokenizer, template, [{"role": role, "content": PROBE.format(0)}])
        if not text.endswith(generation):
            raise CheckpointError(f"the chat template puts text after the generation prompt for {role}")
        before, _, after = text[:len(text) - len(generation)].partition(PROBE.format(0))
        pieces[role] = (before, after) if _ else None  # None: the template drops this role
    conversation = [{"role": role, "content": PROBE.format(i)} for i, role in enumerate(ROLES + ("user",))]
    composed = "".join(pieces[m["role"]][0] + m["content"] + pieces[m["role"]][1]
                       for m in conversation if pieces[m["role"]]) + generation
    if composed != render(tokenizer, template, conversation):
        raise CheckpointError("the chat template does not render message by message; no Ollama TEMPLATE can be "
                              "derived from it")
    branches = [f'{{{{ if eq .Role "{role}" }}}}{before}{{{{ .Content }}}}{after}{{{{ end }}}}'
                for role, piece in pieces.items() if piece for before, after in [piece]]
    return "{{ range .Messages }}" + "".join(branches) + "{{ end }}" + generation


def num_ctx(spec: dict, facts: dict) -> int:
    """The Modelfile's context window: the target's setting, capped by the model's."""
    return min(spec["options"]["num_ctx"], facts["context_length"])


def write(gguf: str, template: str, stops: list[str], num_ctx: int, license_text: str) -> str:
    lines = [f"FROM ./{gguf}", f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines += [f"PARAMETER num_ctx {num_ctx}", f'LICENSE """{license_text}"""']
    return "\n".join(lines) + "\n"
