
$0193a0c4-1f4e-7b6a-9a55-0c1e2d3f4a5bc-42¿çˆ◊"web-shop*

coupon	WELCOMER
o-1¶EUR
tea