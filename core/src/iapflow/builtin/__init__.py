"""The built-in capabilities: one package per capability, each a plugin registered through the
same hooks a third-party plugin uses (its commands, service, config section, protobuf mappings,
collection rules and UI pages).

:data:`BUILTINS` is the order they are registered in, before any installed plugin.
"""

BUILTINS = (
    "iapflow.builtin.jsonws",
    "iapflow.builtin.proto",
    "iapflow.builtin.signin",
    "iapflow.builtin.memory",
    "iapflow.builtin.audit",
    "iapflow.builtin.documents",
    "iapflow.builtin.history",
    "iapflow.builtin.files",
    "iapflow.builtin.watch",
    "iapflow.builtin.queues",
    "iapflow.builtin.workitems",
    "iapflow.builtin.agents",
    "iapflow.builtin.admin",
)
