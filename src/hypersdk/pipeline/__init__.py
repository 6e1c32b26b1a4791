"""The migration pipeline (migration.py) and what it is built from.

Nothing is imported here: the transfer worker, a child process per disk, is a module of this
package, and importing the pipeline (Twisted, pyVmomi) would cost it a third of a CPU second at
each start.
"""
