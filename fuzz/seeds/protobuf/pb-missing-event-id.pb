	c-hostile —îÊ"corpusR
o-1‡'EUR