"""The compression trainable: one trial from config to a measured, saved, tracked student.

Subpackages, each importing only those below it (checked by ``lint-imports``):
``trial`` -> ``tracking`` -> ``serving`` -> ``formats`` -> ``compression`` -> ``training`` -> ``models``
-> ``data`` -> ``energy`` -> ``config`` -> ``errors``.
"""
