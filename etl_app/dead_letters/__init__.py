"""Dead letters: writing them (:mod:`.store`), finding them (:mod:`.filters`, :mod:`.queries`),
and acting on them (:mod:`.actions`: replay one, in bulk or automatically, discard).

Functions take a SQLAlchemy ``Connection``; the caller owns the transaction. Errors a caller is
told about are the :mod:`.errors` family, translated at each edge (HTTP status, click error).
"""
