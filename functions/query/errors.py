"""Domain errors of the query function; their HTTP statuses are one table, query.handler.HTTP_STATUS."""


class QueryError(Exception):
    """Base class; the message is safe to return to the client (no PHI)."""


class BadRequest(QueryError):
    """The request's parameters are malformed (400)."""


class Unauthorized(QueryError):
    """No valid token (401)."""


class Forbidden(QueryError):
    """The token lacks the scope for this route (403)."""


class NotFound(QueryError):
    """The study, series or instance is not in the index (404)."""


class NotAcceptable(QueryError):
    """No representation matches the Accept header (406)."""


class UnsupportedMediaType(QueryError):
    """The request body's media type is not accepted (415)."""


class PayloadTooLarge(QueryError):
    """The request or the object it names is over a size or decode limit (413)."""


class StoreError(QueryError):
    """The index could not be read (503: try again later)."""
