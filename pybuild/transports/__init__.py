"""pybuild.transports: where images live, read into and written from the content store.

As containers/image names them (`oci:DIR`, `oci-archive:FILE`, `docker-archive:FILE`,
`docker://REF`) plus BuildKit's `oci-layout://DIR`: `names.parse_location` reads the text
forms into one `ImageLocation` value, `endpoints.read_image` / `write_image` move an image
between a location and the store. One module per format; nothing heavy is imported here.
"""
