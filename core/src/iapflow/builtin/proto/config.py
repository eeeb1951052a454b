"""``[grpc]``: the section of the protobuf transport."""

from __future__ import annotations

from pydantic import Field

from iapflow.config import Section


class GrpcConfig(Section):
    """``[grpc]``: the OpenIAP protobuf protocol over gRPC (``openiap.FlowService``)."""

    port: int = Field(50051, ge=0, le=65535)
    max_message_bytes: int = Field(256 * 1024 * 1024, ge=1024, le=2**31 - 1)
