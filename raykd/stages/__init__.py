"""The stage drivers and the pipeline that runs them: each driver reads its inputs from the run
dir, calls the Ray-free library with whole config sections, and writes its outputs. Ray Data and
Ray Train appear here (and in the Ray adapter modules they call), not in the library below."""
