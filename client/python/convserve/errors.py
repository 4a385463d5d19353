"""Exceptions raised by the convserve client: one class per gRPC status the service returns.

Every failed call raises a ConvserveError carrying the gRPC status code and the server's own
message; the subclasses also derive from the matching built-in exception (NotFoundError is a
LookupError, InvalidArgumentError a ValueError, DeadlineExceededError a TimeoutError), so
callers can catch either.
"""

import grpc


class ConvserveError(Exception):
    """A call to the convserve service failed.

    Attributes:
      code: the grpc.StatusCode the server (or the gRPC runtime) returned.
      details: the server's message, verbatim.
    """

    def __init__(self, code, details):
        self.code = code
        self.details = details or ""
        super().__init__(f"{code.name}: {self.details}")


class NotFoundError(ConvserveError, LookupError):
    """No layer of that name is loaded."""


class InvalidArgumentError(ConvserveError, ValueError):
    """The request (spec, weights, tensor shape, dtype or layout) does not fit."""


class AlreadyExistsError(ConvserveError):
    """The name is taken (e.g. a shared-memory region registered under it already)."""


class PermissionDeniedError(ConvserveError, PermissionError):
    """The server may not do this (e.g. open a shared-memory object it has no access to)."""


class FailedPreconditionError(ConvserveError):
    """The server cannot do this in its current state (e.g. Tune on the CPU backend, or
    shared memory on a server started without --allow_shared_memory)."""


class ResourceExhaustedError(ConvserveError):
    """The server is overloaded or out of memory; retrying later may succeed."""


class UnavailableError(ConvserveError):
    """The server is unreachable or shutting down; retrying later may succeed."""


class DeadlineExceededError(ConvserveError, TimeoutError):
    """The call ran past its deadline."""


class CancelledError(ConvserveError):
    """The call was cancelled."""


_ERROR_BY_CODE = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
}


def error_from_rpc(error):
    """Turns a grpc.RpcError (which is also a grpc.Call) into the matching ConvserveError."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return _ERROR_BY_CODE.get(code, ConvserveError)(code, details)
