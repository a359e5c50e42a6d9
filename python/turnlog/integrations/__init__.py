"""Adapters that let agent frameworks keep their history in a turnlog store.

Each lives in its own module and imports its framework only when that module is imported
(``import turnlog`` and ``import turnlog.integrations`` import neither):

- ``turnlog.integrations.openai_agents.TurnlogSession``: a ``Session`` of the OpenAI Agents SDK
  (``pip install 'turnlog[openai-agents]'``).
- ``turnlog.integrations.langchain.TurnlogChatMessageHistory``: a LangChain
  ``BaseChatMessageHistory`` (``pip install 'turnlog[langchain]'``).

See ``docs/INTEGRATIONS.md``.
"""
