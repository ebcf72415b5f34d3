"""The song generator's tests, a package so that they import `msynth` as its scripts do.

pytest (default "prepend" import mode) puts the first folder above a test module that is not a
package on sys.path: for this package, tools/musdb_synth, which holds `msynth`. No sys.path edit.
"""
