"""Human feedback: a preference store, a labeling web app, simulated annotators, import and export.

The preference records, their file formats and percentage / majority agreement are not here but in
:mod:`rlhfkit.data` (``preferences``, ``preference_readers``, ``agreement``), a layer below, so the
reward-model trainer reads preference files without SQLAlchemy or FastAPI and without reaching up here.

Modules (import what you need; only :mod:`agreement` works without the ``feedback`` extra):

- :mod:`agreement`  Krippendorff's alpha, Fleiss' kappa
- :mod:`store`      :class:`~rlhfkit.feedback.store.FeedbackStore` (SQLite or PostgreSQL): the project, transactions
- :mod:`backend`    from a path or URL to an engine; ``StoreError`` and what database failures mean
- :mod:`annotators` annotators and their login tokens (``add_annotator``, ``issue_token``, ``ensure_annotator``)
- :mod:`sessions`   login sessions of the web app
- :mod:`items`      adding comparisons (``add_comparisons``) and single completions
- :mod:`labeling`   the queue: next item, submit, skip, undo, progress
- :mod:`answers`    what an answer is, how it is checked, the refusals (re-exported by :mod:`labeling`)
- :mod:`live`       live labels and the counts that decide retirement
- :mod:`export`     live labels, TRL preference pairs and unpaired labels
- :mod:`importing`  importing files into a project
- :mod:`stats`      counts, agreement and per-annotator figures
- :mod:`simulate`   scripted annotators judged by the toxicity lexicon
- :mod:`app`        the FastAPI app (``create_app``)
- :mod:`routes`     the app's routes, on one ``APIRouter``
- :mod:`access`     session and CSRF checks as FastAPI dependencies (``signed_in``, ``admin``)
- :mod:`pages`      templates, key bindings and the labeling page
- :mod:`guard`      what every response gets: the body cap and the security headers
- :mod:`cli`        ``rlhfkit feedback ...``
"""
