"""Model graphs, tensor-parallel sharding, fusion, memory planning and the .pef artifact. Pure: no Ray."""
