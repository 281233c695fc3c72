"""The pixel pipeline: small pure steps over numpy arrays.

decode -> modality LUT -> VOI LUT / window -> photometric (MONOCHROME1, palette, RGB) ->
resize -> encode (PNG, JPEG, GIF). See :mod:`dicomhub.imaging.pipeline` for the whole chain.
"""
