"""Sign-in, sign-out and the pages' shared error answers."""

from __future__ import annotations

from flask import redirect, request, url_for
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import NotFound

from etl_app.ui.blueprint import bp, render
from etl_app.ui.session import authenticate, safe_next, sign_in, sign_out
from etl_app.web import authfail

bp.before_request(authenticate)


@bp.get("/signin")
def signin():
    return render("ui/signin.html", title="Sign in", next=request.args.get("next", ""), error=None)


@bp.post("/signin")
def signin_post():
    target = request.form.get("next", "")
    try:  # an address past its failed sign-ins waits, whatever key it sends (etl_app.web.authfail)
        authfail.refuse_if_throttled()
    except authfail.TooManyFailures as exc:
        message = f"Too many failed sign-ins from your address. Try again in {exc.retry_after} seconds."
        page = render("ui/signin.html", title="Sign in", next=target, error=message)
        return page, 429, {"Retry-After": str(exc.retry_after)}
    user = sign_in(request.form.get("key", ""))
    if user is None:
        authfail.failed()
        message = "That key is not configured, or its role cannot read these pages."
        return render("ui/signin.html", title="Sign in", next=target, error=message), 401
    return redirect(safe_next(target))


@bp.post("/signout")
def signout():
    sign_out()
    return redirect(url_for("ui.signin"))


@bp.get("/")
def home():
    return redirect(url_for("ui.overview"))


def _error(status: int, title: str, message: str):
    return render("ui/error.html", title=title, message=message), status


@bp.errorhandler(401)
def _unauthorized(_exc):
    return _error(401, "Signed out", "Your session has ended. Sign in again.")


@bp.errorhandler(403)
def _forbidden(_exc):
    return _error(403, "Not allowed", "Your key's role may look but not act here.")


@bp.errorhandler(404)
def _not_found(exc):
    """``abort(404, "what was looked for")`` says so; a bare 404 says there is nothing here."""
    default = NotFound.description
    message = exc.description if exc.description and exc.description != default else "There is nothing at this address."
    return _error(404, "Not found", message)


@bp.errorhandler(400)
def _bad_request(exc):
    return _error(400, "Bad request", str(exc.description))


def handle_csrf_error(exc: CSRFError):
    message = f"{exc.description} Reload the page and try again."
    return render("ui/error.html", title="Form expired", message=message), 400


bp.register_error_handler(CSRFError, handle_csrf_error)
