"""One error hierarchy for the whole proxy.

    ClaudeProxyError                      500 api_error / server_error
    ├── IsolationError                    500 (agent_isolation_violation): the CLI showed tools
    ├── InvalidRequestError               400 invalid_request_error (carries ``param``)
    │   ├── RequestTooLargeError          413 request_too_large
    │   │   └── TooManyMessagesError      413 (too_many_messages)
    │   ├── RequestTimeoutError           408 (the body did not arrive in time)
    │   ├── UnsupportedMediaTypeError     415
    │   └── MethodNotAllowedError         405
    ├── AuthenticationError               401 authentication_error
    ├── PermissionDeniedError             403 permission_error
    │   └── MisdirectedRequestError       421 (a Host not served here)
    ├── NotFoundError                     404 not_found_error
    │   └── ModelNotFoundError            404 not_found_error / model_not_found
    ├── RateLimitError                    429 rate_limit_error (carries ``retry_after``)
    │   ├── KeyLimitError                 429: an API key's own limit (carries ``limit``)
    │   └── AccountLimitedError           429: the account's plan limit, until its reset
    ├── UpstreamError                     502 api_error (upstream 5xx)
    ├── OverloadedError                   529 overloaded_error (503 on the OpenAI surface)
    ├── ServiceUnavailableError           503 service_unavailable (CLI missing, queue full...)
    │   ├── NotLoggedInError              503 with how to log in
    │   └── UpstreamUnreachableError      503 (the upstream API could not be reached)
    ├── GatewayTimeoutError               504 timeout_error
    └── HTTPStatusError                   any other status the web framework raises

Each class names its HTTP status and its Anthropic error type; each surface's ``errors``
module renders them in its API's shape.  ``retryable`` says whether a client should try
again (``x-should-retry``): only when the error says when, or the upstream is overloaded.
Messages are written for the user and never carry paths, stack traces or CLI stderr.
"""

from __future__ import annotations


class ClaudeProxyError(Exception):
    status_code = 500
    error_type = "api_error"
    openai_type = "server_error"
    openai_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.retry_after is not None

    @property
    def kind(self) -> str:
        """What went wrong, as logs, metrics and the ledger name it."""
        return self.error_type


class IsolationError(ClaudeProxyError):
    """The CLI reported a tool or MCP server the proxy did not configure: fail closed."""

    openai_code = "agent_isolation_violation"


class InvalidRequestError(ClaudeProxyError):
    status_code = 400
    error_type = "invalid_request_error"
    openai_type = "invalid_request_error"


class RequestTooLargeError(InvalidRequestError):
    status_code = 413
    error_type = "request_too_large"
    openai_code = "request_too_large"


class TooManyMessagesError(RequestTooLargeError):
    openai_code = "too_many_messages"


class RequestTimeoutError(InvalidRequestError):
    status_code = 408
    openai_code = "request_timeout"


class UnsupportedMediaTypeError(InvalidRequestError):
    status_code = 415


class MethodNotAllowedError(InvalidRequestError):
    status_code = 405


class AuthenticationError(ClaudeProxyError):
    status_code = 401
    error_type = "authentication_error"
    openai_type = "invalid_request_error"
    openai_code = "invalid_api_key"


class PermissionDeniedError(ClaudeProxyError):
    status_code = 403
    error_type = "permission_error"
    openai_type = "permission_error"


class MisdirectedRequestError(PermissionDeniedError):
    """A Host this server does not answer for (DNS-rebinding protection)."""

    status_code = 421


class NotFoundError(ClaudeProxyError):
    status_code = 404
    error_type = "not_found_error"
    openai_type = "invalid_request_error"
    openai_code = "not_found"


class ModelNotFoundError(NotFoundError):
    openai_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.", param="model"
        )


class RateLimitError(ClaudeProxyError):
    status_code = 429
    error_type = "rate_limit_error"
    openai_type = "rate_limit_error"
    openai_code = "rate_limit_exceeded"


class KeyLimitError(RateLimitError):
    """A named API key reached one of its limits; refused before anything runs."""

    def __init__(self, message: str, *, limit: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.limit = limit

    @property
    def kind(self) -> str:
        return "key_limit"


class AccountLimitedError(RateLimitError):
    """The account's plan limit is reached (the CLI said so); refused until its reset."""

    @property
    def kind(self) -> str:
        return "account_limited"


class UpstreamError(ClaudeProxyError):
    status_code = 502
    error_type = "api_error"
    openai_type = "server_error"


class OverloadedError(ClaudeProxyError):
    status_code = 529
    error_type = "overloaded_error"
    openai_type = "overloaded_error"

    @property
    def retryable(self) -> bool:
        return True  # the one upstream fault that waiting cures


class ServiceUnavailableError(ClaudeProxyError):
    status_code = 503
    error_type = "api_error"
    openai_type = "service_unavailable"


class NotLoggedInError(ServiceUnavailableError):
    openai_code = "not_logged_in"


class UpstreamUnreachableError(ServiceUnavailableError):
    openai_code = "upstream_unreachable"


class GatewayTimeoutError(ClaudeProxyError):
    status_code = 504
    error_type = "timeout_error"
    openai_type = "timeout"


class HTTPStatusError(ClaudeProxyError):
    """Any other HTTP error the web framework raises, with its own status."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class ClientDisconnectedError(Exception):
    """The client went away before the answer was ready (not an API error: nobody to tell)."""
