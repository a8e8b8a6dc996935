"""``shadow-middleware report``: summarise shadow spans and decide whether to promote the candidate.

Reads the spans back (:mod:`.spans`), folds them per ``(target, route)`` in bounded memory
(:mod:`.aggregate`), joins ground truth (:mod:`.ground_truth`), builds the report and applies the
promotion policy (:mod:`.build`, :mod:`.policy`), and prints it (:mod:`.text`, :mod:`.html`); the
command line is :mod:`.cli`. Nothing is imported here, so that loading one module stays cheap and
``import shadow_middleware`` never loads the report.
"""
