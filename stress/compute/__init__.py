"""Building blocks of the compute burn-in: verified-product engines (host side here; exact
operands and ABFT checks in ``drivers.abft``, the device side in ``drivers.cuda.compute``),
findings and heat-versus-silicon logic."""
