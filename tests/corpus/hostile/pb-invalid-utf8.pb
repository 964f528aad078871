
7e57c0de-ÿþ-not-utf8	c-hostile —îÊ"corpusR
o-1‡'EUR