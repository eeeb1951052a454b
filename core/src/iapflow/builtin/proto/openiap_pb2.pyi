import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("command", "priority", "seq", "id", "rid", "data", "jwt", "traceid", "spanid")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    RID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    JWT_FIELD_NUMBER: _ClassVar[int]
    TRACEID_FIELD_NUMBER: _ClassVar[int]
    SPANID_FIELD_NUMBER: _ClassVar[int]
    command: str
    priority: int
    seq: int
    id: str
    rid: str
    data: _any_pb2.Any
    jwt: str
    traceid: str
    spanid: str
    def __init__(self, command: _Optional[str] = ..., priority: _Optional[int] = ..., seq: _Optional[int] = ..., id: _Optional[str] = ..., rid: _Optional[str] = ..., data: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., jwt: _Optional[str] = ..., traceid: _Optional[str] = ..., spanid: _Optional[str] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ErrorResponse(_message.Message):
    __slots__ = ("message", "code", "stack")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    STACK_FIELD_NUMBER: _ClassVar[int]
    message: str
    code: int
    stack: str
    def __init__(self, message: _Optional[str] = ..., code: _Optional[int] = ..., stack: _Optional[str] = ...) -> None: ...

class GetElementRequest(_message.Message):
    __slots__ = ("xpath",)
    XPATH_FIELD_NUMBER: _ClassVar[int]
    xpath: str
    def __init__(self, xpath: _Optional[str] = ...) -> None: ...

class GetElementResponse(_message.Message):
    __slots__ = ("xpath",)
    XPATH_FIELD_NUMBER: _ClassVar[int]
    xpath: str
    def __init__(self, xpath: _Optional[str] = ...) -> None: ...

class Role(_message.Message):
    __slots__ = ("_id", "name")
    _ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    _id: str
    name: str
    def __init__(self, _id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("_id", "name", "username", "email", "roles")
    _ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    _id: str
    name: str
    username: str
    email: str
    roles: _containers.RepeatedCompositeFieldContainer[Role]
    def __init__(self, _id: _Optional[str] = ..., name: _Optional[str] = ..., username: _Optional[str] = ..., email: _Optional[str] = ..., roles: _Optional[_Iterable[_Union[Role, _Mapping]]] = ...) -> None: ...

class SigninRequest(_message.Message):
    __slots__ = ("username", "password", "jwt", "ping", "validateonly", "agent", "version", "longtoken")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    JWT_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    VALIDATEONLY_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LONGTOKEN_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    jwt: str
    ping: bool
    validateonly: bool
    agent: str
    version: str
    longtoken: bool
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., jwt: _Optional[str] = ..., ping: _Optional[bool] = ..., validateonly: _Optional[bool] = ..., agent: _Optional[str] = ..., version: _Optional[str] = ..., longtoken: _Optional[bool] = ...) -> None: ...

class SigninResponse(_message.Message):
    __slots__ = ("jwt", "user", "config")
    JWT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    jwt: str
    user: User
    config: str
    def __init__(self, jwt: _Optional[str] = ..., user: _Optional[_Union[User, _Mapping]] = ..., config: _Optional[str] = ...) -> None: ...

class RefreshToken(_message.Message):
    __slots__ = ("username", "jwt", "user")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    JWT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    username: str
    jwt: str
    user: User
    def __init__(self, username: _Optional[str] = ..., jwt: _Optional[str] = ..., user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class CustomCommandRequest(_message.Message):
    __slots__ = ("command", "id", "name", "data")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    command: str
    id: str
    name: str
    data: str
    def __init__(self, command: _Optional[str] = ..., id: _Optional[str] = ..., name: _Optional[str] = ..., data: _Optional[str] = ...) -> None: ...

class CustomCommandResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: str
    def __init__(self, result: _Optional[str] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("id", "filename", "collectionname")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    filename: str
    collectionname: str
    def __init__(self, id: _Optional[str] = ..., filename: _Optional[str] = ..., collectionname: _Optional[str] = ...) -> None: ...

class DownloadResponse(_message.Message):
    __slots__ = ("id", "filename", "mimetype")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    MIMETYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    filename: str
    mimetype: str
    def __init__(self, id: _Optional[str] = ..., filename: _Optional[str] = ..., mimetype: _Optional[str] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("filename", "mimetype", "metadata", "collectionname")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    MIMETYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    filename: str
    mimetype: str
    metadata: str
    collectionname: str
    def __init__(self, filename: _Optional[str] = ..., mimetype: _Optional[str] = ..., metadata: _Optional[str] = ..., collectionname: _Optional[str] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("id", "filename", "bytes", "chunks", "mb", "elapsedTime", "mbps")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    MB_FIELD_NUMBER: _ClassVar[int]
    ELAPSEDTIME_FIELD_NUMBER: _ClassVar[int]
    MBPS_FIELD_NUMBER: _ClassVar[int]
    id: str
    filename: str
    bytes: int
    chunks: int
    mb: float
    elapsedTime: int
    mbps: float
    def __init__(self, id: _Optional[str] = ..., filename: _Optional[str] = ..., bytes: _Optional[int] = ..., chunks: _Optional[int] = ..., mb: _Optional[float] = ..., elapsedTime: _Optional[int] = ..., mbps: _Optional[float] = ...) -> None: ...

class BeginStream(_message.Message):
    __slots__ = ("checksum",)
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    checksum: str
    def __init__(self, checksum: _Optional[str] = ...) -> None: ...

class Stream(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class EndStream(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("includehist",)
    INCLUDEHIST_FIELD_NUMBER: _ClassVar[int]
    includehist: bool
    def __init__(self, includehist: _Optional[bool] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: str
    def __init__(self, results: _Optional[str] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("collectionname",)
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    def __init__(self, collectionname: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class col_timeseries(_message.Message):
    __slots__ = ("timeField", "metaField", "granularity")
    TIMEFIELD_FIELD_NUMBER: _ClassVar[int]
    METAFIELD_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    timeField: str
    metaField: str
    granularity: str
    def __init__(self, timeField: _Optional[str] = ..., metaField: _Optional[str] = ..., granularity: _Optional[str] = ...) -> None: ...

class col_collation(_message.Message):
    __slots__ = ("locale", "caseLevel", "caseFirst", "strength", "numericOrdering", "alternate", "maxVariable", "backwards")
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    CASELEVEL_FIELD_NUMBER: _ClassVar[int]
    CASEFIRST_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    NUMERICORDERING_FIELD_NUMBER: _ClassVar[int]
    ALTERNATE_FIELD_NUMBER: _ClassVar[int]
    MAXVARIABLE_FIELD_NUMBER: _ClassVar[int]
    BACKWARDS_FIELD_NUMBER: _ClassVar[int]
    locale: str
    caseLevel: bool
    caseFirst: str
    strength: int
    numericOrdering: bool
    alternate: str
    maxVariable: str
    backwards: bool
    def __init__(self, locale: _Optional[str] = ..., caseLevel: _Optional[bool] = ..., caseFirst: _Optional[str] = ..., strength: _Optional[int] = ..., numericOrdering: _Optional[bool] = ..., alternate: _Optional[str] = ..., maxVariable: _Optional[str] = ..., backwards: _Optional[bool] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("collectionname", "collation", "timeseries", "expireAfterSeconds", "changeStreamPreAndPostImages", "capped", "max", "size")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    COLLATION_FIELD_NUMBER: _ClassVar[int]
    TIMESERIES_FIELD_NUMBER: _ClassVar[int]
    EXPIREAFTERSECONDS_FIELD_NUMBER: _ClassVar[int]
    CHANGESTREAMPREANDPOSTIMAGES_FIELD_NUMBER: _ClassVar[int]
    CAPPED_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    collation: col_collation
    timeseries: col_timeseries
    expireAfterSeconds: int
    changeStreamPreAndPostImages: bool
    capped: bool
    max: int
    size: int
    def __init__(self, collectionname: _Optional[str] = ..., collation: _Optional[_Union[col_collation, _Mapping]] = ..., timeseries: _Optional[_Union[col_timeseries, _Mapping]] = ..., expireAfterSeconds: _Optional[int] = ..., changeStreamPreAndPostImages: _Optional[bool] = ..., capped: _Optional[bool] = ..., max: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateIndexRequest(_message.Message):
    __slots__ = ("collectionname", "index", "options", "name")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    index: str
    options: str
    name: str
    def __init__(self, collectionname: _Optional[str] = ..., index: _Optional[str] = ..., options: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateIndexResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: str
    def __init__(self, result: _Optional[str] = ...) -> None: ...

class GetIndexesRequest(_message.Message):
    __slots__ = ("collectionname",)
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    def __init__(self, collectionname: _Optional[str] = ...) -> None: ...

class GetIndexesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: str
    def __init__(self, results: _Optional[str] = ...) -> None: ...

class DropIndexRequest(_message.Message):
    __slots__ = ("collectionname", "name")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    name: str
    def __init__(self, collectionname: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DropIndexResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("query", "collectionname", "projection", "top", "skip", "orderby", "queryas", "explain")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    SKIP_FIELD_NUMBER: _ClassVar[int]
    ORDERBY_FIELD_NUMBER: _ClassVar[int]
    QUERYAS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    query: str
    collectionname: str
    projection: str
    top: int
    skip: int
    orderby: str
    queryas: str
    explain: bool
    def __init__(self, query: _Optional[str] = ..., collectionname: _Optional[str] = ..., projection: _Optional[str] = ..., top: _Optional[int] = ..., skip: _Optional[int] = ..., orderby: _Optional[str] = ..., queryas: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: str
    def __init__(self, results: _Optional[str] = ...) -> None: ...

class GetDocumentVersionRequest(_message.Message):
    __slots__ = ("collectionname", "id", "version", "decrypt")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DECRYPT_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    id: str
    version: int
    decrypt: bool
    def __init__(self, collectionname: _Optional[str] = ..., id: _Optional[str] = ..., version: _Optional[int] = ..., decrypt: _Optional[bool] = ...) -> None: ...

class GetDocumentVersionResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: str
    def __init__(self, result: _Optional[str] = ...) -> None: ...

class AggregateRequest(_message.Message):
    __slots__ = ("collectionname", "aggregates", "queryas", "hint", "explain")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    AGGREGATES_FIELD_NUMBER: _ClassVar[int]
    QUERYAS_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    aggregates: str
    queryas: str
    hint: str
    explain: bool
    def __init__(self, collectionname: _Optional[str] = ..., aggregates: _Optional[str] = ..., queryas: _Optional[str] = ..., hint: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class AggregateResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: str
    def __init__(self, results: _Optional[str] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("collectionname", "query", "queryas", "explain")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    QUERYAS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    query: str
    queryas: str
    explain: bool
    def __init__(self, collectionname: _Optional[str] = ..., query: _Optional[str] = ..., queryas: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: int
    def __init__(self, result: _Optional[int] = ...) -> None: ...

class DistinctRequest(_message.Message):
    __slots__ = ("collectionname", "field", "query", "queryas", "options", "explain")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    QUERYAS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    field: str
    query: str
    queryas: str
    options: str
    explain: bool
    def __init__(self, collectionname: _Optional[str] = ..., field: _Optional[str] = ..., query: _Optional[str] = ..., queryas: _Optional[str] = ..., options: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class DistinctResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, results: _Optional[_Iterable[str]] = ...) -> None: ...

class InsertOneRequest(_message.Message):
    __slots__ = ("collectionname", "item", "w", "j")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    J_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    item: str
    w: int
    j: bool
    def __init__(self, collectionname: _Optional[str] = ..., item: _Optional[str] = ..., w: _Optional[int] = ..., j: _Optional[bool] = ...) -> None: ...

class InsertOneResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: str
    def __init__(self, result: _Optional[str] = ...) -> None: ...

class InsertManyRequest(_message.Message):
    __slots__ = ("collectionname", "items", "w", "j", "skipresults")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    J_FIELD_NUMBER: _ClassVar[int]
    SKIPRESULTS_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    items: str
    w: int
    j: bool
    skipresults: bool
    def __init__(self, collectionname: _Optional[str] = ..., items: _Optional[str] = ..., w: _Optional[int] = ..., j: _Optional[bool] = ..., skipresults: _Optional[bool] = ...) -> None: ...

class InsertManyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: str
    def __init__(self, results: _Optional[str] = ...) -> None: ...

class UpdateOneRequest(_message.Message):
    __slots__ = ("collectionname", "item", "w", "j")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    J_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    item: str
    w: int
    j: bool
    def __init__(self, collectionname: _Optional[str] = ..., item: _Optional[str] = ..., w: _Optional[int] = ..., j: _Optional[bool] = ...) -> None: ...

class UpdateOneResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: str
    def __init__(self, result: _Optional[str] = ...) -> None: ...

class UpdateDocumentRequest(_message.Message):
    __slots__ = ("collectionname", "query", "document", "w", "j")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    J_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    query: str
    document: str
    w: int
    j: bool
    def __init__(self, collectionname: _Optional[str] = ..., query: _Optional[str] = ..., document: _Optional[str] = ..., w: _Optional[int] = ..., j: _Optional[bool] = ...) -> None: ...

class UpdateResult(_message.Message):
    __slots__ = ("acknowledged", "matchedCount", "modifiedCount", "upsertedCount", "upsertedId")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    MATCHEDCOUNT_FIELD_NUMBER: _ClassVar[int]
    MODIFIEDCOUNT_FIELD_NUMBER: _ClassVar[int]
    UPSERTEDCOUNT_FIELD_NUMBER: _ClassVar[int]
    UPSERTEDID_FIELD_NUMBER: _ClassVar[int]
    acknowledged: bool
    matchedCount: int
    modifiedCount: int
    upsertedCount: int
    upsertedId: str
    def __init__(self, acknowledged: _Optional[bool] = ..., matchedCount: _Optional[int] = ..., modifiedCount: _Optional[int] = ..., upsertedCount: _Optional[int] = ..., upsertedId: _Optional[str] = ...) -> None: ...

class UpdateDocumentResponse(_message.Message):
    __slots__ = ("opresult",)
    OPRESULT_FIELD_NUMBER: _ClassVar[int]
    opresult: UpdateResult
    def __init__(self, opresult: _Optional[_Union[UpdateResult, _Mapping]] = ...) -> None: ...

class InsertOrUpdateOneRequest(_message.Message):
    __slots__ = ("collectionname", "uniqeness", "item", "w", "j")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    UNIQENESS_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    J_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    uniqeness: str
    item: str
    w: int
    j: bool
    def __init__(self, collectionname: _Optional[str] = ..., uniqeness: _Optional[str] = ..., item: _Optional[str] = ..., w: _Optional[int] = ..., j: _Optional[bool] = ...) -> None: ...

class InsertOrUpdateOneResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: str
    def __init__(self, result: _Optional[str] = ...) -> None: ...

class InsertOrUpdateManyRequest(_message.Message):
    __slots__ = ("collectionname", "uniqeness", "items", "w", "j", "skipresults")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    UNIQENESS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    J_FIELD_NUMBER: _ClassVar[int]
    SKIPRESULTS_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    uniqeness: str
    items: str
    w: int
    j: bool
    skipresults: bool
    def __init__(self, collectionname: _Optional[str] = ..., uniqeness: _Optional[str] = ..., items: _Optional[str] = ..., w: _Optional[int] = ..., j: _Optional[bool] = ..., skipresults: _Optional[bool] = ...) -> None: ...

class InsertOrUpdateManyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: str
    def __init__(self, results: _Optional[str] = ...) -> None: ...

class DeleteOneRequest(_message.Message):
    __slots__ = ("collectionname", "id", "recursive")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    id: str
    recursive: bool
    def __init__(self, collectionname: _Optional[str] = ..., id: _Optional[str] = ..., recursive: _Optional[bool] = ...) -> None: ...

class DeleteOneResponse(_message.Message):
    __slots__ = ("affectedrows",)
    AFFECTEDROWS_FIELD_NUMBER: _ClassVar[int]
    affectedrows: int
    def __init__(self, affectedrows: _Optional[int] = ...) -> None: ...

class DeleteManyRequest(_message.Message):
    __slots__ = ("collectionname", "query", "recursive", "ids")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    query: str
    recursive: bool
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collectionname: _Optional[str] = ..., query: _Optional[str] = ..., recursive: _Optional[bool] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteManyResponse(_message.Message):
    __slots__ = ("affectedrows",)
    AFFECTEDROWS_FIELD_NUMBER: _ClassVar[int]
    affectedrows: int
    def __init__(self, affectedrows: _Optional[int] = ...) -> None: ...

class RegisterQueueRequest(_message.Message):
    __slots__ = ("queuename",)
    QUEUENAME_FIELD_NUMBER: _ClassVar[int]
    queuename: str
    def __init__(self, queuename: _Optional[str] = ...) -> None: ...

class RegisterQueueResponse(_message.Message):
    __slots__ = ("queuename",)
    QUEUENAME_FIELD_NUMBER: _ClassVar[int]
    queuename: str
    def __init__(self, queuename: _Optional[str] = ...) -> None: ...

class RegisterExchangeRequest(_message.Message):
    __slots__ = ("exchangename", "algorithm", "routingkey", "addqueue")
    EXCHANGENAME_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ROUTINGKEY_FIELD_NUMBER: _ClassVar[int]
    ADDQUEUE_FIELD_NUMBER: _ClassVar[int]
    exchangename: str
    algorithm: str
    routingkey: str
    addqueue: bool
    def __init__(self, exchangename: _Optional[str] = ..., algorithm: _Optional[str] = ..., routingkey: _Optional[str] = ..., addqueue: _Optional[bool] = ...) -> None: ...

class RegisterExchangeResponse(_message.Message):
    __slots__ = ("queuename",)
    QUEUENAME_FIELD_NUMBER: _ClassVar[int]
    queuename: str
    def __init__(self, queuename: _Optional[str] = ...) -> None: ...

class UnRegisterQueueRequest(_message.Message):
    __slots__ = ("queuename",)
    QUEUENAME_FIELD_NUMBER: _ClassVar[int]
    queuename: str
    def __init__(self, queuename: _Optional[str] = ...) -> None: ...

class UnRegisterQueueResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueueMessageRequest(_message.Message):
    __slots__ = ("queuename", "correlationId", "replyto", "routingkey", "exchangename", "data", "striptoken", "expiration")
    QUEUENAME_FIELD_NUMBER: _ClassVar[int]
    CORRELATIONID_FIELD_NUMBER: _ClassVar[int]
    REPLYTO_FIELD_NUMBER: _ClassVar[int]
    ROUTINGKEY_FIELD_NUMBER: _ClassVar[int]
    EXCHANGENAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STRIPTOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    queuename: str
    correlationId: str
    replyto: str
    routingkey: str
    exchangename: str
    data: str
    striptoken: bool
    expiration: int
    def __init__(self, queuename: _Optional[str] = ..., correlationId: _Optional[str] = ..., replyto: _Optional[str] = ..., routingkey: _Optional[str] = ..., exchangename: _Optional[str] = ..., data: _Optional[str] = ..., striptoken: _Optional[bool] = ..., expiration: _Optional[int] = ...) -> None: ...

class QueueMessageResponse(_message.Message):
    __slots__ = ("queuename", "correlationId", "replyto", "routingkey", "exchangename", "data")
    QUEUENAME_FIELD_NUMBER: _ClassVar[int]
    CORRELATIONID_FIELD_NUMBER: _ClassVar[int]
    REPLYTO_FIELD_NUMBER: _ClassVar[int]
    ROUTINGKEY_FIELD_NUMBER: _ClassVar[int]
    EXCHANGENAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    queuename: str
    correlationId: str
    replyto: str
    routingkey: str
    exchangename: str
    data: str
    def __init__(self, queuename: _Optional[str] = ..., correlationId: _Optional[str] = ..., replyto: _Optional[str] = ..., routingkey: _Optional[str] = ..., exchangename: _Optional[str] = ..., data: _Optional[str] = ...) -> None: ...

class QueueEvent(_message.Message):
    __slots__ = ("queuename", "correlationId", "replyto", "routingkey", "exchangename", "data")
    QUEUENAME_FIELD_NUMBER: _ClassVar[int]
    CORRELATIONID_FIELD_NUMBER: _ClassVar[int]
    REPLYTO_FIELD_NUMBER: _ClassVar[int]
    ROUTINGKEY_FIELD_NUMBER: _ClassVar[int]
    EXCHANGENAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    queuename: str
    correlationId: str
    replyto: str
    routingkey: str
    exchangename: str
    data: str
    def __init__(self, queuename: _Optional[str] = ..., correlationId: _Optional[str] = ..., replyto: _Optional[str] = ..., routingkey: _Optional[str] = ..., exchangename: _Optional[str] = ..., data: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("collectionname", "paths")
    COLLECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    collectionname: str
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collectionname: _Optional[str] = ..., paths: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("id", "operation", "document")
    ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    operation: str
    document: str
    def __init__(self, id: _Optional[str] = ..., operation: _Optional[str] = ..., document: _Optional[str] = ...) -> None: ...

class UnWatchRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class UnWatchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkitemFile(_message.Message):
    __slots__ = ("filename", "_id", "compressed", "file")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    _ID_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    filename: str
    _id: str
    compressed: bool
    file: bytes
    def __init__(self, filename: _Optional[str] = ..., _id: _Optional[str] = ..., compressed: _Optional[bool] = ..., file: _Optional[bytes] = ...) -> None: ...

class Workitem(_message.Message):
    __slots__ = ("_id", "name", "payload", "priority", "nextrun", "lastrun", "files", "state", "wiq", "wiqid", "retries", "username", "success_wiqid", "failed_wiqid", "success_wiq", "failed_wiq", "errormessage", "errorsource", "errortype", "_workspaceid")
    _ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NEXTRUN_FIELD_NUMBER: _ClassVar[int]
    LASTRUN_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WIQ_FIELD_NUMBER: _ClassVar[int]
    WIQID_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_WIQID_FIELD_NUMBER: _ClassVar[int]
    FAILED_WIQID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_WIQ_FIELD_NUMBER: _ClassVar[int]
    FAILED_WIQ_FIELD_NUMBER: _ClassVar[int]
    ERRORMESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERRORSOURCE_FIELD_NUMBER: _ClassVar[int]
    ERRORTYPE_FIELD_NUMBER: _ClassVar[int]
    _WORKSPACEID_FIELD_NUMBER: _ClassVar[int]
    _id: str
    name: str
    payload: str
    priority: int
    nextrun: _timestamp_pb2.Timestamp
    lastrun: _timestamp_pb2.Timestamp
    files: _containers.RepeatedCompositeFieldContainer[WorkitemFile]
    state: str
    wiq: str
    wiqid: str
    retries: int
    username: str
    success_wiqid: str
    failed_wiqid: str
    success_wiq: str
    failed_wiq: str
    errormessage: str
    errorsource: str
    errortype: str
    _workspaceid: str
    def __init__(self, _id: _Optional[str] = ..., name: _Optional[str] = ..., payload: _Optional[str] = ..., priority: _Optional[int] = ..., nextrun: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lastrun: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., files: _Optional[_Iterable[_Union[WorkitemFile, _Mapping]]] = ..., state: _Optional[str] = ..., wiq: _Optional[str] = ..., wiqid: _Optional[str] = ..., retries: _Optional[int] = ..., username: _Optional[str] = ..., success_wiqid: _Optional[str] = ..., failed_wiqid: _Optional[str] = ..., success_wiq: _Optional[str] = ..., failed_wiq: _Optional[str] = ..., errormessage: _Optional[str] = ..., errorsource: _Optional[str] = ..., errortype: _Optional[str] = ..., _workspaceid: _Optional[str] = ...) -> None: ...

class PushWorkitemRequest(_message.Message):
    __slots__ = ("wiq", "wiqid", "name", "payload", "nextrun", "success_wiqid", "failed_wiqid", "success_wiq", "failed_wiq", "priority", "files")
    WIQ_FIELD_NUMBER: _ClassVar[int]
    WIQID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    NEXTRUN_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_WIQID_FIELD_NUMBER: _ClassVar[int]
    FAILED_WIQID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_WIQ_FIELD_NUMBER: _ClassVar[int]
    FAILED_WIQ_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    wiq: str
    wiqid: str
    name: str
    payload: str
    nextrun: _timestamp_pb2.Timestamp
    success_wiqid: str
    failed_wiqid: str
    success_wiq: str
    failed_wiq: str
    priority: int
    files: _containers.RepeatedCompositeFieldContainer[WorkitemFile]
    def __init__(self, wiq: _Optional[str] = ..., wiqid: _Optional[str] = ..., name: _Optional[str] = ..., payload: _Optional[str] = ..., nextrun: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., success_wiqid: _Optional[str] = ..., failed_wiqid: _Optional[str] = ..., success_wiq: _Optional[str] = ..., failed_wiq: _Optional[str] = ..., priority: _Optional[int] = ..., files: _Optional[_Iterable[_Union[WorkitemFile, _Mapping]]] = ...) -> None: ...

class PushWorkitemResponse(_message.Message):
    __slots__ = ("workitem",)
    WORKITEM_FIELD_NUMBER: _ClassVar[int]
    workitem: Workitem
    def __init__(self, workitem: _Optional[_Union[Workitem, _Mapping]] = ...) -> None: ...

class PushWorkitemsRequest(_message.Message):
    __slots__ = ("wiq", "wiqid", "nextrun", "success_wiqid", "failed_wiqid", "success_wiq", "failed_wiq", "priority", "items")
    WIQ_FIELD_NUMBER: _ClassVar[int]
    WIQID_FIELD_NUMBER: _ClassVar[int]
    NEXTRUN_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_WIQID_FIELD_NUMBER: _ClassVar[int]
    FAILED_WIQID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_WIQ_FIELD_NUMBER: _ClassVar[int]
    FAILED_WIQ_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    wiq: str
    wiqid: str
    nextrun: _timestamp_pb2.Timestamp
    success_wiqid: str
    failed_wiqid: str
    success_wiq: str
    failed_wiq: str
    priority: int
    items: _containers.RepeatedCompositeFieldContainer[Workitem]
    def __init__(self, wiq: _Optional[str] = ..., wiqid: _Optional[str] = ..., nextrun: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., success_wiqid: _Optional[str] = ..., failed_wiqid: _Optional[str] = ..., success_wiq: _Optional[str] = ..., failed_wiq: _Optional[str] = ..., priority: _Optional[int] = ..., items: _Optional[_Iterable[_Union[Workitem, _Mapping]]] = ...) -> None: ...

class PushWorkitemsResponse(_message.Message):
    __slots__ = ("workitems",)
    WORKITEMS_FIELD_NUMBER: _ClassVar[int]
    workitems: _containers.RepeatedCompositeFieldContainer[Workitem]
    def __init__(self, workitems: _Optional[_Iterable[_Union[Workitem, _Mapping]]] = ...) -> None: ...

class UpdateWorkitemRequest(_message.Message):
    __slots__ = ("workitem", "ignoremaxretries", "files")
    WORKITEM_FIELD_NUMBER: _ClassVar[int]
    IGNOREMAXRETRIES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    workitem: Workitem
    ignoremaxretries: bool
    files: _containers.RepeatedCompositeFieldContainer[WorkitemFile]
    def __init__(self, workitem: _Optional[_Union[Workitem, _Mapping]] = ..., ignoremaxretries: _Optional[bool] = ..., files: _Optional[_Iterable[_Union[WorkitemFile, _Mapping]]] = ...) -> None: ...

class UpdateWorkitemResponse(_message.Message):
    __slots__ = ("workitem",)
    WORKITEM_FIELD_NUMBER: _ClassVar[int]
    workitem: Workitem
    def __init__(self, workitem: _Optional[_Union[Workitem, _Mapping]] = ...) -> None: ...

class PopWorkitemRequest(_message.Message):
    __slots__ = ("wiq", "wiqid", "includefiles", "compressed")
    WIQ_FIELD_NUMBER: _ClassVar[int]
    WIQID_FIELD_NUMBER: _ClassVar[int]
    INCLUDEFILES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    wiq: str
    wiqid: str
    includefiles: bool
    compressed: bool
    def __init__(self, wiq: _Optional[str] = ..., wiqid: _Optional[str] = ..., includefiles: _Optional[bool] = ..., compressed: _Optional[bool] = ...) -> None: ...

class PopWorkitemResponse(_message.Message):
    __slots__ = ("workitem",)
    WORKITEM_FIELD_NUMBER: _ClassVar[int]
    workitem: Workitem
    def __init__(self, workitem: _Optional[_Union[Workitem, _Mapping]] = ...) -> None: ...

class DeleteWorkitemRequest(_message.Message):
    __slots__ = ("_id",)
    _ID_FIELD_NUMBER: _ClassVar[int]
    _id: str
    def __init__(self, _id: _Optional[str] = ...) -> None: ...

class DeleteWorkitemResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Ace(_message.Message):
    __slots__ = ("_id", "deny", "rights")
    _ID_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    RIGHTS_FIELD_NUMBER: _ClassVar[int]
    _id: str
    deny: bool
    rights: int
    def __init__(self, _id: _Optional[str] = ..., deny: _Optional[bool] = ..., rights: _Optional[int] = ...) -> None: ...

class WorkItemQueue(_message.Message):
    __slots__ = ("workflowid", "robotqueue", "amqpqueue", "projectid", "usersrole", "maxretries", "retrydelay", "initialdelay", "success_wiqid", "failed_wiqid", "success_wiq", "failed_wiq", "_id", "_acl", "name", "_createdbyid", "_createdby", "_created", "_modifiedbyid", "_modifiedby", "_modified", "_version", "packageid", "_workspaceid")
    WORKFLOWID_FIELD_NUMBER: _ClassVar[int]
    ROBOTQUEUE_FIELD_NUMBER: _ClassVar[int]
    AMQPQUEUE_FIELD_NUMBER: _ClassVar[int]
    PROJECTID_FIELD_NUMBER: _ClassVar[int]
    USERSROLE_FIELD_NUMBER: _ClassVar[int]
    MAXRETRIES_FIELD_NUMBER: _ClassVar[int]
    RETRYDELAY_FIELD_NUMBER: _ClassVar[int]
    INITIALDELAY_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_WIQID_FIELD_NUMBER: _ClassVar[int]
    FAILED_WIQID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_WIQ_FIELD_NUMBER: _ClassVar[int]
    FAILED_WIQ_FIELD_NUMBER: _ClassVar[int]
    _ID_FIELD_NUMBER: _ClassVar[int]
    _ACL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    _CREATEDBYID_FIELD_NUMBER: _ClassVar[int]
    _CREATEDBY_FIELD_NUMBER: _ClassVar[int]
    _CREATED_FIELD_NUMBER: _ClassVar[int]
    _MODIFIEDBYID_FIELD_NUMBER: _ClassVar[int]
    _MODIFIEDBY_FIELD_NUMBER: _ClassVar[int]
    _MODIFIED_FIELD_NUMBER: _ClassVar[int]
    _VERSION_FIELD_NUMBER: _ClassVar[int]
    PACKAGEID_FIELD_NUMBER: _ClassVar[int]
    _WORKSPACEID_FIELD_NUMBER: _ClassVar[int]
    workflowid: str
    robotqueue: str
    amqpqueue: str
    projectid: str
    usersrole: str
    maxretries: int
    retrydelay: int
    initialdelay: int
    success_wiqid: str
    failed_wiqid: str
    success_wiq: str
    failed_wiq: str
    _id: str
    _acl: _containers.RepeatedCompositeFieldContainer[Ace]
    name: str
    _createdbyid: str
    _createdby: str
    _created: _timestamp_pb2.Timestamp
    _modifiedbyid: str
    _modifiedby: str
    _modified: _timestamp_pb2.Timestamp
    _version: int
    packageid: str
    _workspaceid: str
    def __init__(self, workflowid: _Optional[str] = ..., robotqueue: _Optional[str] = ..., amqpqueue: _Optional[str] = ..., projectid: _Optional[str] = ..., usersrole: _Optional[str] = ..., maxretries: _Optional[int] = ..., retrydelay: _Optional[int] = ..., initialdelay: _Optional[int] = ..., success_wiqid: _Optional[str] = ..., failed_wiqid: _Optional[str] = ..., success_wiq: _Optional[str] = ..., failed_wiq: _Optional[str] = ..., _id: _Optional[str] = ..., _acl: _Optional[_Iterable[_Union[Ace, _Mapping]]] = ..., name: _Optional[str] = ..., _createdbyid: _Optional[str] = ..., _createdby: _Optional[str] = ..., _created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., _modifiedbyid: _Optional[str] = ..., _modifiedby: _Optional[str] = ..., _modified: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., _version: _Optional[int] = ..., packageid: _Optional[str] = ..., _workspaceid: _Optional[str] = ...) -> None: ...

class AddWorkItemQueueRequest(_message.Message):
    __slots__ = ("workitemqueue", "skiprole")
    WORKITEMQUEUE_FIELD_NUMBER: _ClassVar[int]
    SKIPROLE_FIELD_NUMBER: _ClassVar[int]
    workitemqueue: WorkItemQueue
    skiprole: bool
    def __init__(self, workitemqueue: _Optional[_Union[WorkItemQueue, _Mapping]] = ..., skiprole: _Optional[bool] = ...) -> None: ...

class AddWorkItemQueueResponse(_message.Message):
    __slots__ = ("workitemqueue",)
    WORKITEMQUEUE_FIELD_NUMBER: _ClassVar[int]
    workitemqueue: WorkItemQueue
    def __init__(self, workitemqueue: _Optional[_Union[WorkItemQueue, _Mapping]] = ...) -> None: ...

class UpdateWorkItemQueueRequest(_message.Message):
    __slots__ = ("workitemqueue", "skiprole", "purge")
    WORKITEMQUEUE_FIELD_NUMBER: _ClassVar[int]
    SKIPROLE_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    workitemqueue: WorkItemQueue
    skiprole: bool
    purge: bool
    def __init__(self, workitemqueue: _Optional[_Union[WorkItemQueue, _Mapping]] = ..., skiprole: _Optional[bool] = ..., purge: _Optional[bool] = ...) -> None: ...

class UpdateWorkItemQueueResponse(_message.Message):
    __slots__ = ("workitemqueue",)
    WORKITEMQUEUE_FIELD_NUMBER: _ClassVar[int]
    workitemqueue: WorkItemQueue
    def __init__(self, workitemqueue: _Optional[_Union[WorkItemQueue, _Mapping]] = ...) -> None: ...

class DeleteWorkItemQueueRequest(_message.Message):
    __slots__ = ("wiq", "wiqid", "purge")
    WIQ_FIELD_NUMBER: _ClassVar[int]
    WIQID_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    wiq: str
    wiqid: str
    purge: bool
    def __init__(self, wiq: _Optional[str] = ..., wiqid: _Optional[str] = ..., purge: _Optional[bool] = ...) -> None: ...

class DeleteWorkItemQueueResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartAgentRequest(_message.Message):
    __slots__ = ("agentid",)
    AGENTID_FIELD_NUMBER: _ClassVar[int]
    agentid: str
    def __init__(self, agentid: _Optional[str] = ...) -> None: ...

class StartAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StopAgentRequest(_message.Message):
    __slots__ = ("agentid",)
    AGENTID_FIELD_NUMBER: _ClassVar[int]
    agentid: str
    def __init__(self, agentid: _Optional[str] = ...) -> None: ...

class StopAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAgentLogRequest(_message.Message):
    __slots__ = ("agentid", "podname")
    AGENTID_FIELD_NUMBER: _ClassVar[int]
    PODNAME_FIELD_NUMBER: _ClassVar[int]
    agentid: str
    podname: str
    def __init__(self, agentid: _Optional[str] = ..., podname: _Optional[str] = ...) -> None: ...

class GetAgentLogResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: str
    def __init__(self, result: _Optional[str] = ...) -> None: ...

class GetAgentPodsRequest(_message.Message):
    __slots__ = ("agentid", "stats")
    AGENTID_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    agentid: str
    stats: bool
    def __init__(self, agentid: _Optional[str] = ..., stats: _Optional[bool] = ...) -> None: ...

class GetAgentPodsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: str
    def __init__(self, results: _Optional[str] = ...) -> None: ...

class DeleteAgentPodRequest(_message.Message):
    __slots__ = ("agentid", "podname")
    AGENTID_FIELD_NUMBER: _ClassVar[int]
    PODNAME_FIELD_NUMBER: _ClassVar[int]
    agentid: str
    podname: str
    def __init__(self, agentid: _Optional[str] = ..., podname: _Optional[str] = ...) -> None: ...

class DeleteAgentPodResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteAgentRequest(_message.Message):
    __slots__ = ("agentid",)
    AGENTID_FIELD_NUMBER: _ClassVar[int]
    agentid: str
    def __init__(self, agentid: _Optional[str] = ...) -> None: ...

class DeleteAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
