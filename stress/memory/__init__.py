"""Memory-fault scans: algorithms (March C-, walking, address-in-address, moving inversions,
bit fade, repeated reads, bandwidth loop), bounded error records, and the diagnosis that turns
them into classified, located findings. The ``memory`` stage lives in ``stress.memory.stage``."""
