"""Object detectors on a registered backbone's feature pyramid (shared base in ``base``)."""
