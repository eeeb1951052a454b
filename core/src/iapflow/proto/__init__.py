"""The OpenIAP protobuf schema (package ``openiap``) as generated Python code.

``openiap.proto`` is the source; ``openiap_pb2.py`` is generated from it by ``scripts/gen-proto``
and committed. See docs/protocol-proto.md.
"""
