"""academy_ray: Academy-style agents as detached Ray actors."""
