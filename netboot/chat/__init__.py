"""Chat templates: a conversation (a list of {"role", "content"}) -> the prompt a model was trained on -> token ids.

- ``prompt``: ``ChatFormat`` (``render``, ``encode``, ``stop_token_ids``) and ``chat_format(file, tokenizer,
  override)``, which picks the asked-for template, else the model's own, else its family's built-in one
- ``template``: jinja templates rendered as transformers' ``apply_chat_template`` renders them, in a sandbox
- ``builtin``: llama.cpp's formats for models that carry no template (gemma, llama2, llama2-sys, llama3, chatml)
  and the detection of a model's family
"""

from netboot.chat.builtin import BUILTINS, detect_family, render_builtin
from netboot.chat.prompt import ChatFormat, builtin_format, chat_format, from_override, jinja_format
from netboot.chat.template import ChatTemplateError, ConversationRejected, JinjaTemplate

__all__ = [
    "BUILTINS", "ChatFormat", "ChatTemplateError", "ConversationRejected", "JinjaTemplate", "builtin_format",
    "chat_format", "detect_family", "from_override", "jinja_format", "render_builtin",
]
