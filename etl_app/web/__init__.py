"""The web tier's own code: the app factory (:mod:`etl_app.web.app`) and what both edges of it,
the HTTP API (:mod:`etl_app.api`) and the operator's pages (:mod:`etl_app.ui`), share: the
request's runtime, key and id, audited actions and HTTP errors (:mod:`etl_app.web.context`), the
rejections' pages and CSV (:mod:`etl_app.web.rejections`) and the providers' view
(:mod:`etl_app.web.providers`). Neither edge imports the other."""
