"""The Ray adapters: what runs the Ray-free library on Ray Data (actor pools for encoding and
scoring, a streaming corpus datasource) and joins or starts the Ray session. The stage drivers
call these; nothing below them imports Ray."""
