"""The DIMSE gateway: DICOM upper-layer services (PS3.7, PS3.8) over the DICOMweb services."""
