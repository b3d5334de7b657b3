#!/usr/bin/env python3
"""Regenerates cases.json: templates rendered by the real jinja2 in the environment that
transformers' apply_chat_template uses (ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True), loopcontrols, transformers' tojson and raise_exception).

    python3 gen_cases.py > cases.json      (jinja2 3.1.x)
"""
import json
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import loopcontrols


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def env():
    e = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    e.filters["tojson"] = tojson
    e.globals["raise_exception"] = raise_exception
    return e


def render(template, variables):
    try:
        return {"want": env().from_string(template).render(**variables)}
    except jinja2.exceptions.TemplateSyntaxError as ex:
        return {"error": "syntax", "python_error": str(ex)}
    except jinja2.exceptions.UndefinedError as ex:
        return {"error": "undefined", "python_error": str(ex)}
    except jinja2.exceptions.SecurityError as ex:
        return {"error": "unsupported", "python_error": str(ex)}
    except jinja2.exceptions.TemplateError as ex:
        return {"error": "raise", "python_error": str(ex)}
    except Exception as ex:  # TypeError, ValueError, ZeroDivisionError, OverflowError...
        return {"error": "type", "python_error": type(ex).__name__ + ": " + str(ex)}


IDEFICS2 = ("{% for message in messages %}{{message['role'].capitalize()}}{% if message['content'][0]['type'] == 'image' %}{{':'}}"
            "{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
            "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
            "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")

LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
          "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
          "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
          "{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""

GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
         "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
         "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
         "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")

TOOLS = """{%- set ns = namespace(found=false, count=0) -%}
{%- for m in messages -%}
  {%- if m.role == 'system' -%}{%- set ns.found = true -%}{%- endif -%}
  {%- set ns.count = ns.count + 1 -%}
{%- endfor -%}
{%- if not ns.found -%}<|system|>You are helpful.
{% endif -%}
{%- if tools is defined and tools -%}
Tools: {{ tools | tojson }}
Pretty: {{ tools | tojson(indent=2) }}
{% endif -%}
{%- for m in messages %}
<|{{ m.role }}|>{{ m.content | trim }}
{%- if m.tool_calls is defined %}
{%- for call in m.tool_calls %} CALL {{ call.function.name }}({{ call.function.arguments | tojson }}){% endfor %}
{%- endif %}
{%- endfor %}
count={{ ns.count }}"""

CASES = [
    # chat templates
    {"name": "idefics2 image first", "template": IDEFICS2, "vars": {"add_generation_prompt": True, "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this image?"}]}]}},
    {"name": "idefics2 multi turn", "template": IDEFICS2, "vars": {"add_generation_prompt": False, "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image"}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Two cats."}]}]}},
    {"name": "idefics2 upper role", "template": IDEFICS2, "vars": {"add_generation_prompt": True, "messages": [
        {"role": "USER", "content": [{"type": "text", "text": "x"}]}]}},
    {"name": "idefics2 string content", "template": IDEFICS2, "vars": {"add_generation_prompt": True, "messages": [
        {"role": "user", "content": "plain string"}]}},
    {"name": "llama2", "template": LLAMA2, "vars": {"bos_token": "<s>", "eos_token": "</s>", "messages": [
        {"role": "system", "content": "Sys prompt"}, {"role": "user", "content": " Hello "},
        {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "Bye"}]}},
    {"name": "llama2 bad alternation", "template": LLAMA2, "vars": {"bos_token": "<s>", "eos_token": "</s>", "messages": [
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}},
    {"name": "chatml", "template": CHATML, "vars": {"add_generation_prompt": True, "messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "U\nline"}]}},
    {"name": "zephyr", "template": ZEPHYR, "vars": {"eos_token": "</s>", "add_generation_prompt": True, "messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "U"}]}},
    {"name": "gemma", "template": GEMMA, "vars": {"bos_token": "<bos>", "add_generation_prompt": True, "messages": [
        {"role": "user", "content": "  hi  "}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "q"}]}},
    {"name": "gemma system", "template": GEMMA, "vars": {"bos_token": "<bos>", "messages": [{"role": "system", "content": "x"}]}},
    {"name": "tools", "template": TOOLS, "vars": {"tools": [{"name": "get_weather", "parameters": {"city": {"type": "string"}, "days": 3, "ok": True, "x": None, "f": 1.5, "u": "é\u2028\"q\""}}],
        "messages": [{"role": "user", "content": " weather? "}, {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}]}},
    {"name": "tools none", "template": TOOLS, "vars": {"messages": [{"role": "system", "content": "s"}]}},

    # whitespace control
    {"name": "trim blocks", "template": "{% if true %}\nA\n{% endif %}\nB"},
    {"name": "lstrip blocks", "template": "x\n    {% if true %}\n    y\n    {% endif %}\nz"},
    {"name": "lstrip not for variables", "template": "a\n    {{ 1 }}\n"},
    {"name": "minus strip", "template": "a  \n  {%- if true -%}  \n  b  \n  {%- endif -%}\n  c"},
    {"name": "plus disables lstrip", "template": "a\n    {%+ if true %}b{% endif %}"},
    {"name": "plus disables trim", "template": "{% if true +%}\nb{% endif %}"},
    {"name": "var minus", "template": "a   {{- 'b' -}}   c"},
    {"name": "comment", "template": "a {# hidden #} b\n  {# line #}\nc {#- x -#} d"},
    {"name": "trailing newline dropped", "template": "a\n"},
    {"name": "two trailing newlines", "template": "a\n\n"},
    {"name": "crlf", "template": "a\r\nb\r{% if true %}\r\nc{% endif %}"},
    {"name": "raw", "template": "{% raw %}{{ not parsed }}{% endraw %} done"},
    {"name": "tabs lstrip", "template": "x\n\t \t{% if true %}y{% endif %}"},
    {"name": "start of template lstrip", "template": "   {% if true %}y{% endif %}"},
    {"name": "after var line start", "template": "{{ 'a' }}\n  {% if true %}b{% endif %}"},
    {"name": "nested blocks indentation", "template": "{% for i in range(2) %}\n  {% for j in range(2) %}\n    {{ i }}{{ j }}\n  {% endfor %}\n{% endfor %}\n"},

    # expressions
    {"name": "arithmetic", "template": "{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ 10 / 4 }} {{ 4 / 2 }}"},
    {"name": "float repr", "template": "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1.0 }} {{ -0.0 }} {{ 123456789.125 }} {{ 2.5e-7 }}"},
    {"name": "string ops", "template": "{{ 'a' + 'b' }} {{ 'ab' * 3 }} {{ 3 * 'x' }} {{ 'a' ~ 1 ~ none ~ true }} {{ 'abc'[1] }} {{ 'abc'[-1] }} {{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ 'hello'[10:] }}"},
    {"name": "comparisons", "template": "{{ 1 < 2 < 3 }} {{ 1 < 2 > 3 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ [1,2] == [1,2] }} {{ {'a':1} == {'a':1} }} {{ none == none }} {{ 1 != 2 }} {{ true == 1 }}"},
    {"name": "in operator", "template": "{{ 'b' in 'abc' }} {{ 2 in [1,2] }} {{ 'k' in {'k':1} }} {{ 3 not in [1] }} {{ 'z' not in 'abc' }}"},
    {"name": "logic", "template": "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' or [] }} {{ not 0 }} {{ not [] and 1 }} {{ none or false }}"},
    {"name": "ternary", "template": "{{ 'yes' if 1 else 'no' }} {{ 'yes' if 0 else 'no' }} [{{ 'x' if false }}]"},
    {"name": "tuples", "template": "{{ (1,) }} {{ () }} {{ (1, 2) == [1, 2] }} {{ (1, 2) + (3,) }} {{ (1, 2)[1:] }} {{ (1, 2) * 2 }} {{ (1, 'a') | tojson }} {{ (3, 1) | sort }} {{ 2 in (1, 2) }} {{ (1, 2) | length }}"},
    {"name": "literals", "template": "{{ [1, 'a', none, true, 1.5] }} {{ {'a': 1, 'b': [2]} }} {{ (1, 2) }} {{ 'it\\'s' }} {{ \"q\\\"x\" }} {{ 'a\\nb' }} {{ [] }} {{ {} }}"},
    {"name": "repr quoting", "template": "{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'tab\\t'] }}"},
    {"name": "print values", "template": "{{ none }} {{ true }} {{ false }} {{ undefined_var }}|{{ 42 }} {{ -3 }}"},
    {"name": "attribute and item", "template": "{{ d.a }} {{ d['a'] }} {{ d.missing }}|{{ l[0] }} {{ l[-1] }} {{ l.0 }} {{ l[5] }}", "vars": {"d": {"a": 1}, "l": [1, 2, 3]}},
    {"name": "dict methods", "template": "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('z', 'def') }} {{ d.get('z') }}", "vars": {"d": {"b": 2, "a": 1}}},
    {"name": "string methods", "template": "{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ ' a '.lstrip() }}|{{ ' a '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'abc'.startswith('a') }}|{{ 'abc'.endswith(('x','c')) }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}|{{ 'abc'.upper() }}|{{ 'ABC'.lower() }}|{{ 'aaa'.replace('a','b',2) }}|{{ 'abc'.find('c') }}|{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ '-'.join(['a','b']) }}|{{ 'abab'.count('ab') }}|{{ '{} and {}'.format(1, 'x') }}|{{ 'a b c'.rsplit(' ', 1) }}"},
    {"name": "string predicates", "template": "{{ '123'.isdigit() }} {{ 'abc'.isalpha() }} {{ ''.isdigit() }} {{ 'abc'.islower() }} {{ 'ABC'.isupper() }} {{ '  '.isspace() }} {{ 'a1'.isalnum() }}"},
    {"name": "percent format", "template": "{{ '%s-%d' % ('a', 3) }} {{ '%05.2f' % 3.14159 }} {{ '%x' % 255 }} {{ '%r' % 'q' }} {{ '%%' % () }} {{ '%s' % 'one' }}"},

    # statements
    {"name": "for loop vars", "template": "{% for x in ['a','b','c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ x }};{% endfor %}"},
    {"name": "for else", "template": "{% for x in [] %}x{% else %}empty{% endfor %}"},
    {"name": "for filter", "template": "{% for x in range(10) if x is odd %}{{ x }}{{ loop.length }},{% endfor %}"},
    {"name": "for unpack", "template": "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }} {% endfor %}{% for (k, v) in {'x': 1}.items() %}{{ k }}{{ v }}{% endfor %}"},
    {"name": "for over dict and string", "template": "{% for k in {'b':1,'a':2} %}{{ k }}{% endfor %} {% for c in 'héllo' %}{{ c }}.{% endfor %}"},
    {"name": "break continue", "template": "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}"},
    {"name": "loop cycle prev next", "template": "{% for x in [1,2,3] %}{{ loop.cycle('o','e') }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %}"},
    {"name": "nested loops", "template": "{% for i in [1,2] %}{% for j in [3,4] %}{{ i * j }}{{ loop.index }}{% endfor %}{{ loop.index }}|{% endfor %}"},
    {"name": "set scoping", "template": "{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set x = 3 %}{% endif %}{{ x }}"},
    {"name": "loop scoping", "template": "{% set x = 0 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}|{{ x }}|{% set y = 'o' %}{% for i in range(2) %}{{ y }}{% set y = i %}{{ y }}{% endfor %}|{{ y }}"},
    {"name": "namespace", "template": "{% set ns = namespace(total=0, items=[]) %}{% for i in [1,2,3] %}{% set ns.total = ns.total + i %}{% set ns.items = ns.items + [i] %}{% endfor %}{{ ns.total }} {{ ns.items }}"},
    {"name": "set tuple", "template": "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = 1, 2 %}{{ c }}"},
    {"name": "set block", "template": "{% set body %}Hello {{ name }}{% endset %}[{{ body }}]{% set up | upper %}abc{% endset %}{{ up }}", "vars": {"name": "W"}},
    {"name": "macro", "template": "{% macro greet(name, greeting='Hi') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('A') }} {{ greet('B', greeting='Yo') }} {{ greet(name='C') }}"},
    {"name": "macro recursion", "template": "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n }}*{{ fact(n - 1) }}{% endif %}{% endmacro %}{{ fact(4) }}"},
    {"name": "with block", "template": "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]"},
    {"name": "filter block", "template": "{% filter upper %}hello {{ 'x' }}{% endfilter %}"},
    {"name": "if elif else", "template": "{% for v in [1, 2, 3] %}{% if v == 1 %}one{% elif v == 2 %}two{% else %}many{% endif %} {% endfor %}"},

    # filters
    {"name": "string filters", "template": "{{ '  a  ' | trim }}|{{ 'xax' | trim('x') }}|{{ 'hELLO wORLD' | capitalize }}|{{ 'hello world-foo(bar' | title }}|{{ 'a' | upper }}|{{ 'A' | lower }}|{{ 'aXa' | replace('a', 'b') }}|{{ 'abc' | length }}|{{ 'héllo' | length }}|{{ 'abc' | reverse }}|{{ 'a b  c' | wordcount }}|{{ '<&>' | e }}|{{ 'x' | center(5) }}|"},
    {"name": "list filters", "template": "{{ [3,1,2] | sort }} {{ [3,1,2] | sort(reverse=true) }} {{ ['b','A','a'] | sort }} {{ ['b','A','a'] | sort(case_sensitive=true) }} {{ [1,2,3] | first }} {{ [1,2,3] | last }} {{ [1,2,3] | join(',') }} {{ [1,2,3] | sum }} {{ [1,2,3] | max }} {{ [1,2,3] | min }} {{ [1,1,2] | unique | list }} {{ [1,2] | reverse | list }} {{ 'ab' | list }} {{ [1,2,3] | length }} {{ [] | first }}|"},
    {"name": "default filter", "template": "{{ missing | default('d') }} {{ '' | default('d') }} {{ '' | default('d', true) }} {{ none | default('d') }} {{ missing | d('x') }} {{ false | default('d', boolean=true) }}"},
    {"name": "tojson", "template": "{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ 'é<>&\\'' | tojson }}|{{ [] | tojson(indent=2) }}|{{ {} | tojson }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}", "vars": {"v": {"s": "x\ny\t\u0001", "n": 1, "f": 2.5, "t": True, "z": None, "l": [1, [2, {}]], "e": 1e20}}},
    {"name": "map select", "template": "{{ users | map(attribute='name') | join(', ') }}|{{ users | selectattr('admin') | map(attribute='name') | list }}|{{ users | rejectattr('admin') | list | length }}|{{ users | selectattr('name', 'equalto', 'b') | list }}|{{ [1,2,3,4] | select('odd') | list }}|{{ [1,2,3,4] | reject('odd') | list }}|{{ ['a','B'] | map('upper') | list }}|{{ users | map(attribute='age', default=0) | list }}", "vars": {"users": [{"name": "a", "admin": True, "age": 3}, {"name": "b", "admin": False}]}},
    {"name": "int float round", "template": "{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '2.5' | float }} {{ 'y' | float }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.567 | round(2) }} {{ 2.1 | round(0, 'ceil') }} {{ 5 | round }} {{ -3 | abs }} {{ '0x1A' | int(base=16) }}"},
    {"name": "string filter and items", "template": "{{ 1 | string }} {{ [1, 'a'] | string }} {{ {'a': 1} | items | list }} {{ {'b': 1, 'a': 2} | dictsort }} {{ none | string }}"},
    {"name": "indent", "template": "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}|"},
    {"name": "batch truncate format", "template": "{{ [1,2,3,4,5] | batch(2) | list }} {{ [1,2,3] | batch(2, 'x') | list }} {{ 'hello world this is long' | truncate(12) }} {{ '%s=%s' | format('a', 1) }}"},
    {"name": "length of dict", "template": "{{ {'a':1,'b':2} | length }} {{ {'a':1} | count }}"},

    # tests
    {"name": "tests", "template": "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ 1 is integer }} {{ 1.0 is float }} {{ {} is mapping }} {{ [] is iterable }} {{ [] is sequence }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'a' is equalto 'a' }} {{ 1 is eq 1 }} {{ 2 is gt 1 }} {{ 'a' is in 'abc' }} {{ true is boolean }} {{ true is true }} {{ false is false }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ x is not none }} {{ range is callable }}", "vars": {"x": 1}},

    # errors
    {"name": "error raise", "template": "a{{ raise_exception('bad input') }}"},
    {"name": "error undefined attr", "template": "{{ foo.bar }}"},
    {"name": "error undefined add", "template": "{{ foo + 1 }}"},
    {"name": "error type add", "template": "{{ 'a' + 1 }}"},
    {"name": "error syntax unclosed", "template": "{% if true %}x"},
    {"name": "error syntax bad tag", "template": "{% foo %}"},
    {"name": "error syntax expr", "template": "{{ 1 + }}"},
    {"name": "error unclosed var", "template": "{{ 1 "},
    {"name": "error div zero", "template": "{{ 1 // 0 }}"},
    {"name": "error mutate", "template": "{% set l = [] %}{{ l.append(1) }}"},
    {"name": "error range too big", "template": "{{ range(1000000) | length }}"},
    {"name": "error unknown filter", "template": "{{ 1 | nosuchfilter }}"},
    {"name": "error set attr non namespace", "template": "{% set d = {} %}{% set d.x = 1 %}"},
    {"name": "error endfor mismatch", "template": "{% for x in y %}{% endif %}"},
    {"name": "error call undefined", "template": "{{ nofunc() }}"},
    {"name": "error compare", "template": "{{ 1 < 'a' }}"},
    {"name": "error iterate int", "template": "{% for x in 5 %}{% endfor %}"},
]


def main():
    out = []
    for c in CASES:
        r = render(c["template"], c.get("vars", {}))
        out.append({"name": c["name"], "template": c["template"], "vars": c.get("vars", {}), **r})
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
