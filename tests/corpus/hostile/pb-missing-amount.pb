
$7e57c0de-0000-4000-8000-00000000000a	c-hostile —îÊ"corpusR
o-1