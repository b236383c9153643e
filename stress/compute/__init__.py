"""Building blocks of the compute burn-in: exact operands and ABFT checks, verified-product
engines (host side here, device side in ``stress.cuda_compute``), heat-versus-silicon logic."""
